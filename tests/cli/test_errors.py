"""What a CLI user sees of bad input: one plain line per record, never pydantic's raw validation text."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError
from typer.testing import CliRunner

from kecpm.cli import app
from kecpm.cli._output import error_lines
from kecpm.errors import validation_lines
from kecpm.post_files import post_to_record
from kecpm.records import EMPTY_TEXT, PostInput
from kecpm.synthetic import synthetic_posts

RAW_PYDANTIC = ("validation error", "errors.pydantic.dev", "input_value", "type=", "For further information")


def _plain(output: str) -> None:
    for marker in RAW_PYDANTIC:
        assert marker not in output, output


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_an_empty_post_is_one_sentence_naming_it(text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        PostInput(text=text)
    assert validation_lines(caught.value) == [f"PostInput: text: {EMPTY_TEXT}"]


def test_validation_errors_are_one_line_per_record() -> None:
    with pytest.raises(ValidationError) as caught:
        TypeAdapter(list[PostInput]).validate_python([{"text": " "}, {"text": "fine"}, {"text": "", "id": 3}])
    lines = error_lines(caught.value)
    assert lines == [
        f"record 1: text: {EMPTY_TEXT}",
        f"record 3: text: {EMPTY_TEXT}; id: Input should be a valid string",
    ]
    _plain("\n".join(lines))


def test_kecpm_extract_on_an_empty_post(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["extract", "   ", "--model", str(tmp_path / "model")])
    assert result.exit_code == 1
    assert result.output.strip() == f"error: PostInput: text: {EMPTY_TEXT}"
    _plain(result.output)


def test_an_uncaught_bad_record_is_one_line_per_record_not_a_traceback(tmp_path: Path) -> None:
    records = [post_to_record(p) for p in synthetic_posts(3)]
    records[0]["token"] = [" ", ""]
    records[2]["label_list"][0][0]["relation"] = "/misc/no_such_relation"
    data = tmp_path / "val.json"
    data.write_text(json.dumps(records), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "kecpm", "predict", "--model", str(tmp_path / "m"), "--data", str(data), "--out", "x"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith(f"error: {data}:") for line in lines), done.stderr
    assert EMPTY_TEXT in lines[0] and "no_such_relation" in lines[1]
    assert "Traceback" not in done.stderr
    _plain(done.stderr)
