import json

from typer.testing import CliRunner

from kecpm.cli import app
from kecpm.post_files import read_kecpm, write_kecpm
from kecpm.synthetic import synthetic_posts

runner = CliRunner()


def test_help_everywhere():
    for args in (["--help"], ["data", "--help"], ["data", "stats", "--help"], ["data", "fewshot", "--help"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "Usage" in result.output


def test_stats_counts_records_and_relations(split_dir):
    result = runner.invoke(app, ["data", "stats", str(split_dir / "train.json"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["records"] == 42 and summary["quintuples"] == 42
    assert summary["relations"]["parent"] == 2


def test_validate_lists_all_problems_and_exits_non_zero(split_dir, tmp_path):
    records = json.loads((split_dir / "train.json").read_text())
    records[0]["label_list"][0][0]["relation"] = "spouse"
    records[5]["label_list"][0][0]["sec_ent"]["pos"] = [0, 50]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(records))
    result = runner.invoke(app, ["data", "validate", str(bad), str(split_dir / "val.json")])
    assert result.exit_code == 1
    assert "bad.json:1" in result.output and "spouse" in result.output
    assert "bad.json:6" in result.output and "out of range" in result.output
    assert "val.json: valid" in result.output
    assert runner.invoke(app, ["data", "validate", str(split_dir / "val.json")]).exit_code == 0


def test_fewshot_writes_split_and_reports(tmp_path):
    source = write_kecpm(synthetic_posts(420, seed=5), tmp_path / "full.json")
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["data", "fewshot", str(source), "--ratio", "0.1", "--seed", "3", "--out", str(out), "--compare", str(source)],
    )
    assert result.exit_code == 0, result.output
    assert len(read_kecpm(out / "train.json")) == 42
    report = json.loads((out / "report.json").read_text())
    assert report["build"]["quintuples"] == 42 and str(source) in report["compared"]
    assert "Jensen-Shannon" in (out / "report.md").read_text()


def test_missing_file_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["data", "stats", str(tmp_path / "nope.json")])
    assert result.exit_code == 2
    assert "nope.json: no such file" in result.output
