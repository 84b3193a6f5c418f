"""One wiring: a post without an image description gets the same demonstrations, the same rendered prompts
and the same knowledge from `kecpm knowledge build`, `kecpm run` and `KECPMPipeline`; and `kecpm run`
completes on a seed folder without any caption file (the loopback server is the LLM)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kecpm.agents import KnowledgeCache, KnowledgeChain, KnowledgeResult, call_key, prompt_variables
from kecpm.cli import app
from kecpm.pipeline import KECPMPipeline, PipelineConfig, RetrieveDemonstrations
from kecpm.post_files import load_split, write_kecpm
from kecpm.synthetic import synthetic_posts
from kecpm.testing import ScriptedChatModel

runner = CliRunner()
LIMIT = 6


def _seed_folder(root: Path, *, train_captions: bool) -> Path:
    folder = root / "seed_5"
    train = synthetic_posts(LIMIT, seed=5, id_prefix="wtrain")
    val = synthetic_posts(LIMIT, seed=6, id_prefix="wval")
    write_kecpm(train, folder / "train.json")
    if train_captions:
        write_kecpm(train, folder / "train_ofa_image_caption.json")
    write_kecpm(val, folder / "val.json")  # no val_ofa_image_caption.json: no val post has a description
    return folder


def _config(tmp_path: Path, server) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(
        f'rounds = 1\n[selection]\nk = 2\n[llm]\nbase_url = "{server.base_url}"\nmodel = "loopback"\n'
        'max_tokens_param = "max_tokens"\n'
    )
    return path


def _trajectory(path: Path, post_id: str) -> KnowledgeResult:
    for line in path.read_text(encoding="utf-8").splitlines():
        result = KnowledgeResult.model_validate_json(line)
        if result.post_id == post_id:
            return result
    raise AssertionError(f"no trajectory for {post_id} in {path}")


@pytest.mark.slow
def test_a_post_without_an_image_description_is_treated_alike_on_every_path(tmp_path, server):
    data = _seed_folder(tmp_path, train_captions=True)
    config_file = _config(tmp_path, server)
    (post,) = load_split(data, "val")[:1]
    assert post.image_description == ""

    run_out = tmp_path / "run"
    run = runner.invoke(
        app,
        ["run", "--data", str(data), "--out", str(run_out), "--config", str(config_file), "--epochs", "1"],
    )
    assert run.exit_code == 0, run.output
    by_run = _trajectory(run_out / "knowledge" / "trajectories.jsonl", post.id)

    build_out = tmp_path / "build"
    build = runner.invoke(
        app,
        [
            "knowledge", "build", "--data", str(data / "val.json"), "--out", str(build_out), "--store",
            str(run_out / "store"), "--k", "2", "--rounds", "1", "--llm", server.base_url, "--model", "loopback",
            "--limit", "1", "--no-progress",
        ],
    )  # fmt: skip
    assert build.exit_code == 0, build.output
    with KnowledgeCache(build_out / "knowledge.sqlite") as cache:
        by_build = cache.result(post.id)
    assert by_build is not None

    pipeline_config = PipelineConfig.from_file(
        config_file, store=str(run_out / "store"), extractor=run_out / "model", knowledge_cache=tmp_path / "p.sqlite"
    )
    with KECPMPipeline(pipeline_config) as pipeline:
        by_pipeline = pipeline.invoke(post)
    assert by_pipeline.knowledge is not None

    # Same demonstrations: the ones the store ranks by the post's text alone.
    demonstrations = asyncio.run(RetrieveDemonstrations(pipeline_config)(post))
    assert len(demonstrations) == 2
    assert [d.id for d in by_pipeline.demonstrations] == [d.id for d in demonstrations]
    # Same rendered prompts: every call of every path has the key of the messages built from them.
    chain = KnowledgeChain(ScriptedChatModel.replaying(), rounds=1)
    variables, _ = prompt_variables(post, demonstrations)
    expected = call_key(
        "generate",
        "generate@v1",
        chain.messages("generate", variables),
        model="loopback",
        params=pipeline_config.llm.call_params(),
    )
    keys = {name: [s.key for s in r.steps] for name, r in (("run", by_run), ("build", by_build))}
    keys["pipeline"] = [s.key for s in by_pipeline.knowledge.steps]
    assert keys["run"][0] == expected
    assert keys["run"] == keys["build"] == keys["pipeline"] and len(keys["run"]) == 3
    # Same knowledge.
    assert by_run.knowledge == by_build.knowledge == by_pipeline.knowledge.knowledge
    assert by_run.knowledge

    # Counted in every report: the stage details, the manifest, the build report.
    stages = json.loads((run_out / "stages.json").read_text())
    assert stages["knowledge"]["text_only_posts"] == LIMIT  # every val post, no train post
    assert stages["index"]["text_only_demonstrations"] == 0
    manifest = json.loads((run_out / "manifest.json").read_text())
    assert manifest["extra"]["text_only_posts"] == {"train": 0, "eval": LIMIT}
    report = json.loads((build_out / "knowledge_report.json").read_text())
    assert report["text_only_posts"] == 1
    assert "ranked by text alone" in " ".join(build.output.split())


@pytest.mark.slow
@pytest.mark.parametrize("knowledge", ["llm", "none"])
def test_kecpm_run_completes_on_a_seed_folder_without_caption_files(tmp_path, server, knowledge):
    data = _seed_folder(tmp_path, train_captions=False)
    assert sorted(p.name for p in data.iterdir()) == ["train.json", "val.json"]
    out = tmp_path / "run"
    args = ["run", "--data", str(data), "--out", str(out), "--config", str(_config(tmp_path, server))]
    result = runner.invoke(app, [*args, "--epochs", "1", "--knowledge", knowledge])
    assert result.exit_code == 0, result.output
    scores = json.loads((out / "eval" / "scores.json").read_text())
    assert scores
    stages = json.loads((out / "stages.json").read_text())
    assert stages["index"]["demonstrations"] == LIMIT
    assert stages["index"]["text_only_demonstrations"] == LIMIT
    assert stages["predict"]["text_only_posts"] == LIMIT
    if knowledge == "llm":
        assert stages["knowledge"]["text_only_posts"] == 2 * LIMIT and stages["knowledge"]["failed"] == 0
    else:
        assert "knowledge" not in stages
    assert "text alone" in " ".join(result.output.split())
