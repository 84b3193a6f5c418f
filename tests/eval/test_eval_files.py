"""Reading predictions files for scoring: line numbers, the lenient reader, alignment with the gold."""

from __future__ import annotations

import json

import pytest

from kecpm.errors import DataError
from kecpm.eval import evaluate_files, load_run
from kecpm.post_files import write_kecpm
from kecpm.predictions import read_predictions, read_predictions_lenient, write_predictions
from kecpm.synthetic import synthetic_posts


def test_readers_remember_lines_and_writers_never_write_them(tmp_path):
    gold = synthetic_posts(3, seed=1)
    path = write_predictions(tmp_path / "p.jsonl", [p.quintuples for p in gold])
    text = path.read_text()
    assert '"line"' not in text
    path.write_text(text.replace("\n", "\n\n", 1))  # a blank line shifts the rest
    assert [r.line for r in read_predictions(path)] == [1, 3, 4]
    records, problems = read_predictions_lenient(path)
    assert [r.line for r in records] == [1, 3, 4] and problems == []
    write_predictions(tmp_path / "again.jsonl", records)
    assert '"line"' not in (tmp_path / "again.jsonl").read_text()


def test_lenient_reader_keeps_alignment_and_what_can_be_read(tmp_path):
    good = {"head": "Ann", "head_type": "per", "tail": "Bo", "tail_type": "per", "relation": "couple"}
    lines = [
        json.dumps({"index": 0, "quintuples": [good, {"head": "Ann"}]}),  # one malformed quintuple
        "not json",
        json.dumps([1, 2]),
        json.dumps({"index": 7, "img_id": "x.jpg", "quintuples": [good]}),  # index out of order
        json.dumps({"index": 4, "quintuples": "none"}),
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(lines) + "\n")
    records, problems = read_predictions_lenient(path)
    assert [r.index for r in records] == [0, 1, 2, 3, 4]
    assert [len(r.quintuples) for r in records] == [1, 0, 0, 1, 0]
    assert records[3].img_id == "x.jpg"
    assert [p.line for p in problems] == [1, 2, 3, 4, 5]
    assert "quintuple 2: head_type: Field required" in str(problems[0])
    assert str(problems[1]).startswith(f"{path}:2: malformed JSON")
    assert "index 7 out of order (expected 3)" in str(problems[3])
    with pytest.raises(DataError) as caught:
        read_predictions(path)
    assert len(caught.value.problems) == 4  # every bad line named at once (index order is checked after)


def test_load_run_accepts_record_ids_as_img_ids(tmp_path):
    gold = synthetic_posts(2, seed=1)
    gold_path = write_kecpm(gold, tmp_path / "val.json")
    pred_path = write_predictions(tmp_path / "p.jsonl", [[], []], img_ids=[gold[0].id, gold[1].img_id])
    posts, records, problems = load_run(gold_path, pred_path)
    assert len(posts) == len(records) == 2 and problems == []
    with pytest.raises(ValueError, match="one gold file per predictions file"):
        evaluate_files([gold_path, gold_path], [pred_path])
