from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kecpm.cli import app
from kecpm.extractor import load_extractor
from kecpm.post_files import load_split, write_kecpm
from kecpm.predictions import read_predictions


def _train_tiny(split_dir, tiny_encoder, out, *options: str) -> list[str]:
    """`kecpm train` on the synthetic split with the tiny encoder, small and quiet, plus ``options``."""
    return [
        "train",
        "--train", str(split_dir / "train.json"),
        "--val", str(split_dir / "val.json"),
        "--out", str(out),
        "--checkpoint", str(tiny_encoder),
        "--set", "hidden_size=32",
        "--set", "max_length=96",
        "--set", "return_freed_memory=false",
        "--quiet",
        *options,
    ]  # fmt: skip


def test_train_then_predict(split_dir, tiny_encoder, tmp_path):
    runner = CliRunner()
    out = tmp_path / "model"
    result = runner.invoke(
        app,
        _train_tiny(
            split_dir,
            tiny_encoder,
            out,
            "--inputs",
            "know",
            "--knowledge-sentences",
            "1",
            "--knowledge-filter",
            "naming_post",
            "--epochs",
            "2",
        ),
    )
    assert result.exit_code == 0, result.output
    assert "best val micro_f1" in result.output
    card = json.loads((out / "config.json").read_text())
    assert card["parts"] == {
        "image_description": False,
        "knowledge": True,
        "knowledge_sentences": 1,
        "knowledge_filter": "naming_post",
    }
    assert card["config"]["hidden_size"] == 32
    assert card["train_config"]["return_freed_memory"] is False
    val = load_split(split_dir, "val")
    assert len(read_predictions(out / "val_predictions.jsonl")) == len(val)

    preds = tmp_path / "preds.jsonl"
    result = runner.invoke(
        app, ["predict", "--model", str(out), "--data", str(split_dir / "val.json"), "--out", str(preds)]
    )
    assert result.exit_code == 0, result.output
    records = read_predictions(preds)
    assert [r.img_id for r in records] == [p.img_id for p in val]
    # the sibling knowledge file was read: the same as predicting on the loaded posts
    expected = load_extractor(out).predict(val)
    assert [[q.to_quintuple().surface() for q in r.quintuples] for r in records] == [
        [q.surface() for q in p] for p in expected
    ]
    assert (out / "val_predictions.jsonl").read_text() == preds.read_text()

    fast = tmp_path / "int8.jsonl"
    result = runner.invoke(
        app, ["predict", "--model", str(out), "--data", str(split_dir / "val.json"), "--out", str(fast), "--int8"]
    )
    assert result.exit_code == 0, result.output
    assert [r.img_id for r in read_predictions(fast)] == [p.img_id for p in val]

    # a model given twice is an ensemble of two equal members: the same predictions as the model alone
    twice = tmp_path / "twice.jsonl"
    data = ["--data", str(split_dir / "val.json")]
    result = runner.invoke(app, ["predict", "--model", str(out), "--model", str(out), *data, "--out", str(twice)])
    assert result.exit_code == 0, result.output
    assert twice.read_text() == preds.read_text()
    result = runner.invoke(
        app, ["predict", "--model", str(out), "--model", str(out), *data, "--out", str(twice), "--ray", "local"]
    )
    assert result.exit_code != 0 and "--ray predicts with one model" in result.output


def test_knowledge_override_must_match_the_posts(split_dir, tmp_path, tiny_encoder):
    other = tmp_path / "other_knowledge.json"
    write_kecpm(load_split(split_dir, "train")[:3], other)
    result = CliRunner().invoke(
        app,
        ["predict", "--model", str(tmp_path), "--data", str(split_dir / "val.json"), "--out", str(tmp_path / "p.jsonl"),
         "--knowledge", str(other)],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "3 records, but" in str(result.exception)


def test_unknown_labels_in_the_data_are_named(split_dir, tmp_path):
    records = json.loads((split_dir / "train.json").read_text())
    records[4]["label_list"][0][0]["relation"] = "founded_by"
    bad = tmp_path / "bad_train.json"
    bad.write_text(json.dumps(records))
    result = CliRunner().invoke(
        app, ["train", "--train", str(bad), "--val", str(split_dir / "val.json"), "--out", str(tmp_path / "m")]
    )
    assert result.exit_code != 0
    message = str(result.exception)
    assert "bad_train.json:5" in message
    assert "unknown relation 'founded_by'" in message


def test_predict_with_a_folder_from_an_older_kecpm_prints_one_sentence(split_dir, tmp_path):
    old = tmp_path / "old_model"
    old.mkdir()
    (old / "extractor.json").write_text(json.dumps({"format_version": 0, "family": "span_pair"}))
    result = CliRunner().invoke(
        app, ["predict", "--model", str(old), "--data", str(split_dir / "val.json"), "--out", str(tmp_path / "p.jsonl")]
    )
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {old} holds a model in an older or unknown kecpm format")
    assert "retrain it with `kecpm train`" in lines[0]


def test_adapt_leaves_out_the_excluded_texts_and_writes_an_encoder(split_dir, tiny_encoder, tmp_path):
    from kecpm.post_files import read_texts

    out = tmp_path / "adapted"
    result = CliRunner().invoke(
        app,
        [
            "adapt",
            "--texts", str(split_dir / "train.json"),
            "--texts", str(split_dir / "val.json"),
            "--exclude", str(split_dir / "val.json"),
            "--out", str(out),
            "--checkpoint", str(tiny_encoder),
            "--epochs", "1",
            "--head-steps", "1",
            "--quiet",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    val = read_texts(split_dir / "val.json")
    kept = {tuple(t) for t in read_texts(split_dir / "train.json")} - {tuple(t) for t in val}
    assert f"{len(kept)} texts ({len(val)} left out" in result.output
    assert json.loads((out / "adaptation.json").read_text())["texts"] == len(kept)
    assert (out / "model.safetensors").is_file()


def test_adapt_names_a_missing_text_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a short path, which the error box does not wrap
    result = CliRunner().invoke(app, ["adapt", "--texts", "none.txt", "--out", "o"])
    assert result.exit_code != 0 and "none.txt: no such file" in result.output


def test_pseudo_label_then_train_on_the_labels_first(split_dir, trained_tiny, tiny_encoder, tmp_path):
    from kecpm.post_files import read_kecpm, read_texts

    _, teacher = trained_tiny
    runner = CliRunner()
    pseudo = tmp_path / "pseudo.json"
    result = runner.invoke(
        app,
        [
            "pseudo-label",
            "--model", str(teacher),
            "--texts", str(split_dir / "train.json"),
            "--texts", str(split_dir / "val.json"),
            "--exclude", str(split_dir / "val.json"),
            "--posts", "10",
            "--relation-threshold", "0",
            "--out", str(pseudo),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    labelled = read_kecpm(pseudo)
    val = {tuple(t) for t in read_texts(split_dir / "val.json")}
    assert f"10 texts read ({len(val)} left out as in --exclude)" in result.output
    assert 0 < len(labelled) <= 10 and all(p.quintuples for p in labelled)
    assert not {tuple(p.tokens) for p in labelled} & val
    assert f"{len(labelled)} labelled" in result.output

    out = tmp_path / "student"
    result = runner.invoke(
        app,
        _train_tiny(
            split_dir, tiny_encoder, out,
            "--pseudo", str(pseudo), "--inputs", "only_text", "--epochs", "1", "--set", "pseudo_epochs=1",
        ),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    card = json.loads((out / "config.json").read_text())
    assert card["training_data"]["pseudo"]["posts"] == len(labelled)
    assert card["training_data"]["files"]["pseudo"]["name"] == "pseudo.json"
    assert card["train_config"]["pseudo_epochs"] == 1


def test_pseudo_label_names_a_missing_teacher(split_dir, tmp_path):
    missing = tmp_path / "none"
    result = CliRunner().invoke(
        app, ["pseudo-label", "--model", str(missing), "--texts", str(split_dir / "val.json"), "--out", "o"]
    )
    assert result.exit_code != 0 and f"{missing}: no such model directory" in str(result.exception)


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [("--knowledge-filter", "relevant", "knowledge_filter"), ("--knowledge-sentences", "0", "knowledge_sentences")],
)
def test_bad_input_options_are_named_before_training(split_dir, tmp_path, option, value, named):
    result = CliRunner().invoke(
        app,
        ["train", "--train", str(split_dir / "train.json"), "--val", str(split_dir / "val.json"),
         "--out", str(tmp_path / "m"), option, value],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert not (tmp_path / "m").exists()
