"""`kecpm run --dry-run` and `--budget-tokens`, with the loopback server as the LLM."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from kecpm.cli import app

runner = CliRunner()


def test_run_dry_run_then_a_budget_then_the_rest(tmp_path, server):
    config = tmp_path / "pipeline.toml"
    config.write_text(
        f'rounds = 1\n[llm]\nbase_url = "{server.base_url}"\nmodel = "loopback"\nmax_tokens_param = "max_tokens"\n'
        "max_tokens = 120\n"
    )
    out = tmp_path / "run"
    args = ["run", "--out", str(out), "--config", str(config), "--epochs", "1", "--limit", "4"]
    dry = runner.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert server.stats()["requests"] == 0
    estimate = json.loads((out / "spend_estimate.json").read_text())
    assert estimate["posts"] == 8 and estimate["total"]["calls_max"] == 24  # 4 train + 4 val, 3 calls each
    assert not (out / "predictions.jsonl").exists()

    stopped = runner.invoke(app, [*args, "--budget-tokens", "3000"])
    assert stopped.exit_code == 4, stopped.output
    assert "stopped" in stopped.output and "posts done" in stopped.output
    made = server.stats()["completions"]
    assert 0 < made < 24
    assert "knowledge" not in json.loads((out / "stages.json").read_text())  # not done: a rerun resumes it

    finished = runner.invoke(app, args)
    assert finished.exit_code == 0, finished.output
    stats = server.stats()
    assert stats["completions"] == 24 and stats["repeated"] == 0
