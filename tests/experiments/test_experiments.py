"""Experiments: a grid over templates and settings, run for real (Chroma, MiniLM extractor, LLM over HTTP
to the loopback server), with its leaderboard, call sharing, diff and replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kecpm.agents.schemas import Critique, Knowledge, KnowledgeResult, StatementCheck, Step
from kecpm.cli import app
from kecpm.errors import KecpmError
from kecpm.experiments import Grid, diff_cells, knowledge_quality, replay, run_experiment
from kecpm.synthetic import synthetic_posts


def tiny_grid(base_url: str, **changes) -> Grid:
    values = {
        "name": "tiny",
        "seeds": [1],
        "epochs": 1,
        "synthetic_size": (8, 4),
        "pipeline": {
            "rounds": 1,
            "selection": {"k": 2},
            "llm": {"base_url": base_url, "model": "loopback", "max_tokens_param": "max_tokens"},
        },
        "axes": {"generate": ["generate@v1", "generate@v2"]},
    }
    return Grid.model_validate(values | changes)


# -- the grid model (no runs) -----------------------------------------------------------------------
def test_cells_are_the_product_of_the_axes_with_aliases_tables_and_template_shorthands():
    grid = Grid(
        axes={
            "generate": ["v1", 2],
            "k": [1, 3],
            "weights": [{"text_weight": 1.0, "image_weight": 0.0}, {"text_weight": 0.5, "image_weight": 0.5}],
        }
    )
    cells = grid.cells()
    assert len(cells) == 8
    first = cells[0]
    assert first.name == "generate=v1 k=1 weights=text_weight:1.0,image_weight:0.0"
    assert first.settings["pipeline.templates.generate"] == "generate@v1"
    assert cells[-1].settings["pipeline.templates.generate"] == "generate@v2"
    config = grid.run_config(cells[-1], 17, out=Path("x"))
    assert config.pipeline.templates == {"generate": "generate@v2"}
    assert config.pipeline.selection.k == 3 and config.pipeline.selection.text_weight == 0.5
    assert len({c.slug for c in cells}) == 8 and all("/" not in c.slug and " " not in c.slug for c in cells)


def test_extractor_and_dotted_axes_reach_the_run_settings():
    grid = Grid(
        axes={
            "knowledge_sentences": [1],
            "knowledge_filter": ["naming_post"],
            "parts": ["know"],
            "pipeline.llm.temperature": [0.7],
        }
    )
    config = grid.run_config(grid.cells()[0], 5, out=Path("x"))
    assert (
        config.knowledge_sentences,
        config.knowledge_filter,
        config.parts,
        config.pipeline.llm.temperature,
        config.seed,
    ) == (1, "naming_post", "know", 0.7, 5)


def test_bad_grids_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="not a setting an axis may change"):
        Grid(axes={"seeds": [1, 2]})
    with pytest.raises(ValueError, match="API key"):
        Grid(pipeline={"llm": {"api_key": "sk-secret"}})
    path = tmp_path / "grid.toml"
    path.write_text('[axes]\ngenerate = ["generate@v9"]\n', encoding="utf-8")
    with pytest.raises(KecpmError, match=r"generate=v9.*generate@v9"):
        Grid.from_file(path)


def test_grid_file_paths_are_relative_to_the_file_and_seeds_find_their_folders(tmp_path, split_dir):
    few_shot = tmp_path / "DATA" / "jmere" / "few_shot"
    few_shot.mkdir(parents=True)
    split_dir.rename(few_shot / "seed_3")
    path = tmp_path / "grids" / "g.toml"
    path.parent.mkdir()
    path.write_text('data = "../DATA"\nseeds = [3]\n[axes]\nk = [1, 2]\n', encoding="utf-8")
    grid = Grid.from_file(path)
    assert grid.seed_data(3).samefile(few_shot / "seed_3")
    with pytest.raises(KecpmError, match="seed_4"):
        grid.seed_data(4)


def test_the_shipped_example_grid_is_valid():
    grid = Grid.from_file(Path(__file__).resolve().parents[2] / "examples" / "grid.toml")
    assert len(grid.cells()) == 8 and len(grid.seeds) == 3


def test_quality_signals_count_unsupported_statements_and_named_entities():
    post = synthetic_posts(1, seed=3)[0]
    head = post.quintuples[0].head.name
    generated = Knowledge(statements=[f"{head} is well known.", "Something else entirely.", "A third one."])
    critique = Critique(
        checks=[
            StatementCheck(index=1, verdict="supported"),
            StatementCheck(index=2, verdict="unsupported"),
            StatementCheck(index=3, verdict="plausible"),
        ],
        accept=False,
    )
    steps = [
        Step(stage="generate", round=0, template="generate@v1", output=generated, key="a"),
        Step(stage="critique", round=1, template="critique@v1", output=critique, key="b"),
    ]
    result = KnowledgeResult(post_id=post.id, knowledge=generated.statements, steps=steps, accepted=False)
    signals = knowledge_quality([result], [post])
    names = {e.name.lower() for q in post.quintuples for e in (q.head, q.tail)}
    assert signals.unsupported_share == pytest.approx(1 / 3)
    assert signals.accepted_share == 0.0
    assert signals.statements == 3 and signals.words == len(head.split()) + 9
    assert signals.entity_mention_share == pytest.approx(1 / len(names))
    alone = KnowledgeResult(post_id=post.id, knowledge=["x y z"], steps=steps[:1], accepted=False)
    assert knowledge_quality([alone], [post]).unsupported_share is None


# -- a real grid ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def experiment(tmp_path_factory, loopback):
    loopback.configure(latency=0.01, faults={}, script=[], accept=False)
    loopback.reset()
    out = tmp_path_factory.mktemp("experiment")
    result = run_experiment(tiny_grid(loopback.base_url), out)
    return result, loopback.stats()


def test_every_cell_runs_and_the_leaderboard_links_its_manifests(experiment):
    result, _ = experiment
    assert [c.name for c in result.cells] == ["generate=v1", "generate=v2"]
    for name in ("markdown", "json", "f1_by_cell", "f1_vs_calls"):
        assert result.leaderboard[name].stat().st_size > 0
    board = result.leaderboard["markdown"].read_text(encoding="utf-8")
    for cell in result.cells:
        run = cell.runs[0]
        assert set(run.scores) >= {"paper_micro_f1", "paper_macro_f1"}
        assert f"({run.manifest})" in board and (result.out / run.manifest).is_file()
        assert run.quality is not None and run.quality.posts == 12 and run.quality.words > 0
        assert run.calls_needed == 36  # 12 posts x generate, critique, revise
    data = json.loads(result.leaderboard["json"].read_text(encoding="utf-8"))
    assert [c["rank"] for c in data["cells"]] == [1, 2]
    manifest = json.loads(result.manifest.read_text(encoding="utf-8"))
    assert manifest["kind"] == "experiment" and manifest["templates"]["generate"] == "generate@v1, generate@v2"
    recorded = {c["name"]: c for c in manifest["extra"]["cells"]}
    assert recorded["generate=v2"]["config"]["pipeline"]["templates"] == {"generate": "generate@v2"}
    assert manifest["extra"]["totals"]["llm_calls"] == sum(r["llm_calls"] for c in recorded.values() for r in c["runs"])


def test_the_calls_counted_are_the_calls_the_server_answered(experiment):
    result, stats = experiment
    assert result.totals["llm_calls"] == stats["completions"] == 72
    assert stats["repeated"] == 0  # no request was paid for twice


def test_an_extractor_only_axis_makes_no_llm_call(experiment, loopback, tmp_path):
    result, _ = experiment
    before = loopback.stats()["completions"]
    grid = tiny_grid(loopback.base_url, axes={"generate": ["generate@v1"], "knowledge_sentences": [1]})
    extra = run_experiment(grid, tmp_path / "more", shared=result.out / "shared", leaderboard=False)
    run = extra.cells[0].runs[0]
    assert loopback.stats()["completions"] == before
    assert (run.llm_calls, run.cached_calls, run.trained) == (0, 36, True)


def test_diff_shows_the_prompt_difference_of_two_cells(experiment):
    result, _ = experiment
    text = diff_cells(result.out, "generate=v1", "generate=v2")
    assert "-## generate round 0 (generate@v1; the prompt matches the cached call)" in text
    assert "+## generate round 0 (generate@v2; the prompt matches the cached call)" in text
    assert any(line.startswith("+") and "research assistant" in line for line in text.splitlines())
    printed = CliRunner().invoke(app, ["experiment", "diff", str(result.out), "generate-v1", "generate-v2"])
    assert printed.exit_code == 0, printed.output
    assert "generate@v2" in printed.output


def test_replay_reproduces_the_scores_from_the_caches_without_llm_calls(experiment, loopback, tmp_path):
    result, _ = experiment
    before = loopback.stats()["completions"]
    replayed = replay(result.manifest, out=tmp_path / "replay")
    assert loopback.stats()["completions"] == before
    assert replayed.experiment.totals["llm_calls"] == 0
    assert replayed.experiment.totals["cached_calls"] == result.totals["llm_calls"]
    assert len(replayed.rows) == 2 and replayed.max_difference == 0.0
    for cell in result.cells:
        first = (result.out / cell.runs[0].out / "predictions.jsonl").read_bytes()
        again = (tmp_path / "replay" / cell.runs[0].out / "predictions.jsonl").read_bytes()
        assert first == again


def test_the_cli_runs_a_grid_file_and_reports_bad_ones(tmp_path):
    missing = CliRunner().invoke(app, ["experiment", "--grid", str(tmp_path / "none.toml")])
    assert missing.exit_code == 1 and "no such grid file" in missing.output
    both = CliRunner().invoke(app, ["experiment"])
    assert both.exit_code == 2


def test_a_dry_run_of_a_grid_sends_nothing_and_counts_shared_calls_once(loopback, tmp_path):
    from kecpm.experiments import estimate_experiment

    loopback.reset()
    grid = tiny_grid(loopback.base_url, axes={"generate": ["generate@v1"], "knowledge_sentences": [1, 2]})
    estimate = estimate_experiment(grid, tmp_path / "dry")
    assert loopback.stats()["requests"] == 0
    # two cells that differ only in the extractor share every call: 12 posts x 3 calls, counted once
    assert estimate.posts == 24 and estimate.total().calls_max == 36
    grid_file = _grid_file(tmp_path, loopback)
    cli = CliRunner().invoke(app, ["experiment", "--grid", str(grid_file), "--out", str(tmp_path / "g"), "--dry-run"])
    assert cli.exit_code == 0, cli.output
    assert "dry run" in cli.output and loopback.stats()["requests"] == 0


def _grid_file(tmp_path: Path, loopback) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(
        'name = "dry"\nseeds = [1]\nepochs = 1\nsynthetic_size = [4, 2]\n'
        f'[pipeline]\nrounds = 0\n[pipeline.llm]\nbase_url = "{loopback.base_url}"\nmodel = "loopback"\n'
        '[axes]\ngenerate = ["generate@v1", "generate@v2"]\n'
    )
    return path
