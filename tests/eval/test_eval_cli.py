"""``kecpm eval`` on synthetic KECPM files: report files, seeds, and bad input named by its line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kecpm.cli import app
from kecpm.post_files import read_kecpm, write_kecpm
from kecpm.predictions import write_predictions
from kecpm.synthetic import synthetic_posts

runner = CliRunner()


@pytest.fixture
def run_files(tmp_path: Path):
    """Two seeds of synthetic gold, with predictions that get the first seed fully right and miss a
    third of the second."""
    files = []
    for seed in (1, 2):
        gold = synthetic_posts(24, seed=seed)
        gold_path = write_kecpm(gold, tmp_path / f"seed_{seed}" / "val.json")
        pred = [post.quintuples if seed == 1 or index % 3 else [] for index, post in enumerate(gold)]
        pred_path = write_predictions(tmp_path / f"pred_{seed}.jsonl", pred, img_ids=[p.img_id for p in gold])
        files.append((gold_path, pred_path))
    return files


def arguments(files):
    return [option for gold, pred in files for option in ("--gold", str(gold), "--pred", str(pred))]


def test_eval_writes_json_markdown_and_plots(run_files, tmp_path):
    out = tmp_path / "report"
    result = runner.invoke(app, ["eval", *arguments(run_files), "--out", str(out), "--bootstrap", "100"])
    assert result.exit_code == 0, result.output
    assert "micro_f1" in result.output and "mean +- std" in result.output
    scores = json.loads((out / "scores.json").read_text())
    micro = scores["summary"]["micro_f1"]
    # Seed 2 misses 8 of 24 quintuples: P 1, R 2/3, F1 0.8.
    assert micro["values"] == [1.0, 0.8]
    assert micro["mean"] == pytest.approx(0.9)
    assert micro["std"] == pytest.approx(0.1414213562, abs=1e-9)
    assert scores["runs"][1]["result"]["micro"] == {
        "precision": 1.0, "recall": 2 / 3, "f1": 0.8, "correct": 16, "predicted": 16, "support": 24,
    }  # fmt: skip
    low, high = scores["runs"][1]["intervals"]["micro_f1"]
    assert low < 0.8 < high
    report = (out / "report.md").read_text()
    assert "| micro_f1 | 100.00 | 80.00 | 90.00 +- 14.14 |" in report
    assert "![per-relation F1](relation_f1.png)" in report
    for name in ("relation_f1.png", "relation_confusion.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_standard_mode_and_options(run_files, tmp_path):
    gold, pred = run_files[1]
    out = tmp_path / "standard"
    result = runner.invoke(
        app,
        ["eval", "--gold", str(gold), "--pred", str(pred), "--mode", "standard", "--undirected", "--match", "span",
         "--labels", "parent,couple", "--bootstrap", "0", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    scores = json.loads((out / "scores.json").read_text())
    assert scores["mode"] == "standard" and scores["directed"] is False and scores["match"] == "span"
    assert scores["runs"][0]["result"]["labels"] == ["parent", "couple"]
    assert scores["runs"][0]["intervals"] == {}


def test_without_out_nothing_is_written(run_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    result = runner.invoke(app, ["eval", *arguments(run_files[:1]), "--bootstrap", "0"])
    assert result.exit_code == 0, result.output
    assert sorted(tmp_path.rglob("*")) == before


def _rewrite_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


def test_malformed_line_is_named_or_counted_as_invalid(run_files, tmp_path):
    gold, pred = run_files[0]
    _rewrite_line(pred, 3, '{"index": 2, "quintuples": [')
    result = runner.invoke(app, ["eval", "--gold", str(gold), "--pred", str(pred), "--bootstrap", "0"])
    assert result.exit_code == 2
    assert f"{pred}:3: malformed JSON" in result.output.replace("\n", "")
    out = tmp_path / "lenient"
    result = runner.invoke(
        app, ["eval", "--gold", str(gold), "--pred", str(pred), "--lenient", "--bootstrap", "0", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "1 invalid" in result.output
    scores = json.loads((out / "scores.json").read_text())
    assert scores["runs"][0]["result"]["micro"]["correct"] == 23  # the lost line's quintuple is missed
    assert "malformed JSON" in scores["runs"][0]["invalid"][0]
    assert f"{pred}:3: malformed JSON" in (out / "report.md").read_text()


def test_unknown_relation_and_type_are_named_or_counted_as_invalid(run_files, tmp_path):
    gold, pred = run_files[0]
    lines = pred.read_text().splitlines()
    record = json.loads(lines[4])
    record["quintuples"][0]["relation"] = "best_friend"
    record["quintuples"].append({**record["quintuples"][0], "relation": "couple", "head_type": "people"})
    _rewrite_line(pred, 5, json.dumps(record))
    result = runner.invoke(app, ["eval", "--gold", str(gold), "--pred", str(pred), "--bootstrap", "0"])
    assert result.exit_code == 2
    output = result.output.replace("\n", "")
    assert f"{pred}:5: prediction 4, quintuple 1: unknown relation 'best_friend'" in output
    assert "quintuple 2: unknown entity type 'people'" in output
    out = tmp_path / "lenient"
    result = runner.invoke(
        app, ["eval", "--gold", str(gold), "--pred", str(pred), "--lenient", "--bootstrap", "0", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    scores = json.loads((out / "scores.json").read_text())
    micro = scores["runs"][0]["result"]["micro"]
    assert (micro["correct"], micro["predicted"], micro["support"]) == (23, 25, 24)
    report = (out / "report.md").read_text()
    assert "2 invalid" in report and "unknown relation 'best_friend'" in report


def test_record_count_mismatch_names_the_line(run_files):
    gold, pred = run_files[0]
    short = pred.with_name("short.jsonl")
    short.write_text("".join(pred.read_text().splitlines(keepends=True)[:20]))
    result = runner.invoke(app, ["eval", "--gold", str(gold), "--pred", str(short), "--lenient"])
    assert result.exit_code == 2
    assert "20 prediction records, but the gold has 24 (the file ends after 20 records)" in result.output
    long = pred.with_name("long.jsonl")
    long.write_text(pred.read_text() + '{"index": 24, "quintuples": []}\n')
    result = runner.invoke(app, ["eval", "--gold", str(gold), "--pred", str(long)])
    assert result.exit_code == 2
    assert "(line 25 is record 25)" in result.output


def test_misaligned_img_id_is_an_error(run_files):
    gold, pred = run_files[0]
    lines = pred.read_text().splitlines()
    first, second = json.loads(lines[0]), json.loads(lines[1])
    first["img_id"], second["img_id"] = second["img_id"], first["img_id"]
    _rewrite_line(pred, 1, json.dumps(first))
    result = runner.invoke(app, ["eval", "--gold", str(gold), "--pred", str(pred)])
    assert result.exit_code == 2
    assert f"{pred}:1: img_id" in result.output.replace("\n", "")


def test_bad_options_are_refused(run_files):
    gold, pred = run_files[0]
    assert runner.invoke(app, ["eval", "--gold", str(gold), "--pred", str(pred), "--mode", "lax"]).exit_code == 2
    both = ["--gold", str(gold), "--gold", str(gold), "--pred", str(pred)]
    assert runner.invoke(app, ["eval", *both]).exit_code == 2
    result = runner.invoke(app, ["eval", "--gold", str(gold), "--pred", str(pred), "--undirected"])
    assert result.exit_code == 2 and "paper mode" in result.output


def test_gold_read_back_matches_gold_file(run_files):
    # The fixture's gold files are valid KECPM files (a guard on the test data itself).
    assert len(read_kecpm(run_files[0][0])) == 24
