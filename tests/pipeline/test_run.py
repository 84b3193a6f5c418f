"""`kecpm run` (rerun from its caches) and `kecpm extract`, with the loopback server as the LLM."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from kecpm.cli import app

runner = CliRunner()


def _config(tmp_path, server) -> str:
    path = tmp_path / "pipeline.toml"
    path.write_text(
        f'rounds = 1\n[llm]\nbase_url = "{server.base_url}"\nmodel = "loopback"\nmax_tokens_param = "max_tokens"\n'
    )
    return str(path)


def test_run_writes_results_then_reuses_every_cache(tmp_path, server):
    out = tmp_path / "run"
    args = ["run", "--out", str(out), "--config", _config(tmp_path, server), "--epochs", "1", "--limit", "6"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    for name in (
        "predictions.jsonl",
        "eval/report.md",
        "eval/scores.json",
        "manifest.json",
        "model/config.json",
        "model/README.md",
    ):
        assert (out / name).exists(), name
    calls = server.stats()["completions"]
    assert calls >= 12  # 12 posts, at least generate + critique each
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["templates"] == {
        "generate": "generate@v1",
        "critique": "critique@v1",
        "revise": "revise@v1",
        "extract_input": "extract_input@v1",
    }
    assert len(manifest["inputs"]) == 2 and manifest["git_revision"]

    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert server.stats()["completions"] == calls
    for stage in ("data", "index", "knowledge", "train", "predict", "eval"):
        assert f"{stage}: cached" in second.output

    # a kecpm whose extractor defaults differ trains again (and predicts and scores again), asks no LLM
    from kecpm.extractor import SpanPairConfig

    field = SpanPairConfig.model_fields["dropout"]
    default = field.default
    try:
        field.default = default + 0.05
        SpanPairConfig.model_rebuild(force=True)
        third = runner.invoke(app, args)
    finally:
        field.default = default
        SpanPairConfig.model_rebuild(force=True)
    assert third.exit_code == 0, third.output
    assert server.stats()["completions"] == calls
    assert "knowledge: cached" in third.output
    for stage in ("train", "predict", "eval"):
        assert f"{stage}: cached" not in third.output


def test_extract_prints_quintuples_and_knowledge(tmp_path, server, store_dir, model_dir):
    result = runner.invoke(
        app,
        [
            "extract",
            "Mira Holt signs a new contract with Corvex Labs",
            "--caption",
            "a woman holding a pen",
            "--model",
            str(model_dir),
            "--store",
            str(store_dir),
            "--config",
            _config(tmp_path, server),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["knowledge"]["knowledge"] and len(payload["demonstrations"]) == 2
    assert isinstance(payload["quintuples"], list)


def test_extract_with_an_image_and_no_description_offline_is_a_clear_error(tmp_path, server, model_dir):
    from PIL import Image

    image = tmp_path / "photo.jpg"
    Image.new("RGB", (32, 32), "blue").save(image)
    result = runner.invoke(
        app,
        [
            "extract",
            "Some text here",
            "--image",
            str(image),
            "--model",
            str(model_dir),
            "--config",
            _config(tmp_path, server),
        ],
    )
    assert result.exit_code == 1
    assert "has an image but no description" in result.output
