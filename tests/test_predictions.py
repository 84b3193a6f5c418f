import pytest

from kecpm.errors import DataError
from kecpm.predictions import read_predictions, write_predictions


def test_round_trip_keeps_order_spans_and_ids(tmp_path, posts):
    path = write_predictions(tmp_path / "p.jsonl", [p.quintuples for p in posts[:3]], img_ids=[p.img_id for p in posts])
    records = read_predictions(path)
    assert [r.index for r in records] == [0, 1, 2]
    assert records[1].img_id == posts[1].img_id
    assert records[2].quintuples[0].to_quintuple() == posts[2].quintuples[0]
    assert '"head_type": "per"' in path.read_text().splitlines()[0]


def test_malformed_lines_are_named(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"index": 0, "quintuples": []}\n{"index": 1, "quintuples": [{"head": "x"}]}\n{oops\n')
    with pytest.raises(DataError) as caught:
        read_predictions(path)
    assert [p.line for p in caught.value.problems] == [2, 3]
    path.write_text('{"index": 0}\n{"index": 2}\n')
    with pytest.raises(DataError, match=r"p\.jsonl:2.*out of order"):
        read_predictions(path)
    path.write_text('{"index": 0}\n\n{"index": 2}\n')  # a blank line: the problem names the file's line 3
    with pytest.raises(DataError, match=r"p\.jsonl:3.*out of order"):
        read_predictions(path)
