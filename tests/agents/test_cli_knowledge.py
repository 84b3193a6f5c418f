"""``kecpm knowledge build|show`` against the loopback server, including a build killed mid-way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from kecpm.cli import app
from kecpm.post_files import read_kecpm
from kecpm.testing import LoopbackServer

runner = CliRunner()


def test_build_then_show(knowledge_build_args, server: LoopbackServer, split_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(
        app, knowledge_build_args(split_dir / "val.json", out, server, "--concurrency", "4", "--rounds", "1")
    )
    assert result.exit_code == 0, result.output
    written = read_kecpm(out / "val_ofa_knowledge.json")
    assert len(written) == 21 and all(p.knowledge for p in written)
    # the captions beside val.json were read and kept
    assert written[0].image_descriptions
    report = json.loads((out / "knowledge_report.json").read_text())
    assert report["succeeded"] == 21 and report["usage"]["critique"]["calls"] == 21
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["templates"] == {"generate": "generate@v1", "critique": "critique@v1", "revise": "revise@v1"}
    calls = server.stats()["requests"]
    again = runner.invoke(app, knowledge_build_args(split_dir / "val.json", out, server, "--concurrency", "4"))
    assert again.exit_code == 0, again.output
    assert server.stats()["requests"] == calls  # all from the cache

    shown = runner.invoke(app, ["knowledge", "show", "--out", str(out), written[0].id])
    assert shown.exit_code == 0, shown.output
    for stage in ("generate", "critique", "revise"):
        assert stage in shown.output
    summary = runner.invoke(app, ["knowledge", "show", "--out", str(out), "--json"])
    assert json.loads(summary.output)["results"] == 21


def test_a_build_that_drops_unsupported_statements_makes_no_revise_call(
    knowledge_build_args, server: LoopbackServer, split_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = ("--rounds", "2", "--reflection", "drop_unsupported")
    result = runner.invoke(app, knowledge_build_args(split_dir / "val.json", out, server, *args))
    assert result.exit_code == 0, result.output
    usage = json.loads((out / "knowledge_report.json").read_text())["usage"]
    # the server judges both statements supported or plausible: one critique, nothing dropped, no second round
    assert (usage["generate"]["calls"], usage["critique"]["calls"], usage["revise"]["calls"]) == (21, 21, 0)
    assert all(len(p.knowledge) == 2 for p in read_kecpm(out / "val_ofa_knowledge.json"))
    assert json.loads((out / "manifest.json").read_text())["config"]["reflection"] == "drop_unsupported"
    wrong = runner.invoke(app, knowledge_build_args(split_dir / "val.json", out, server, "--reflection", "rewrite"))
    assert wrong.exit_code == 2 and "rewrite" in wrong.output


def test_failures_exit_non_zero_and_only_failed_retries_them(
    knowledge_build_args, server: LoopbackServer, split_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    server.configure(script=["500"] * 3)
    failed = runner.invoke(
        app, knowledge_build_args(split_dir / "val.json", out, server, "--rounds", "0", "--retries", "0")
    )
    assert failed.exit_code == 1
    assert "--only-failed" in failed.output
    assert json.loads((out / "knowledge_report.json").read_text())["failures"]
    before = server.stats()["requests"]
    retried = runner.invoke(
        app, knowledge_build_args(split_dir / "val.json", out, server, "--rounds", "0", "--only-failed")
    )
    assert retried.exit_code == 0, retried.output
    assert server.stats()["requests"] - before == 3
    assert all(p.knowledge for p in read_kecpm(out / "val_ofa_knowledge.json"))


def test_a_killed_build_resumes_and_repeats_no_finished_call(
    knowledge_build_args, server: LoopbackServer, split_dir: Path, tmp_path: Path
) -> None:
    server.configure(latency=0.05)
    out = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "kecpm",
        *knowledge_build_args(split_dir / "val.json", out, server, "--concurrency", "2"),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while server.stats()["completions"] < 20 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    done_before = server.stats()["completions"]
    assert 20 <= done_before < 63, "the build was not interrupted mid-way"
    result = runner.invoke(app, knowledge_build_args(split_dir / "val.json", out, server, "--concurrency", "2"))
    assert result.exit_code == 0, result.output
    stats = server.stats()
    # At most the calls in flight at the kill (2) were answered but never stored, so asked again
    assert stats["repeated"] <= 2
    assert stats["completions"] <= 63 + 2
    assert all(p.knowledge for p in read_kecpm(out / "val_ofa_knowledge.json"))


def test_bad_arguments_are_clear_errors(server: LoopbackServer, tmp_path: Path) -> None:
    missing = runner.invoke(
        app, ["knowledge", "build", "--data", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o")]
    )
    assert missing.exit_code == 1
    assert "nope.json" in missing.output
    bad = runner.invoke(app, ["knowledge", "show", "--out", str(tmp_path / "never-built")])
    assert bad.exit_code == 1 and "no cache" in bad.output
