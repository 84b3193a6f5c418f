"""Point 3: a knowledge build (``kecpm knowledge build`` in a child process, against the loopback server)
killed with SIGKILL at random moments, ten times, then finished: the result equals an uninterrupted
run's, no call whose answer was stored is asked again, and the cache is never corrupt."""

from __future__ import annotations

import random
import signal
import sqlite3
import time
from pathlib import Path

from typer.testing import CliRunner

from kecpm.agents import KnowledgeCache
from kecpm.cli import app

KILLS = 10
POSTS = 80


def _integrity(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def test_sigkill_ten_times_then_resume_equals_an_uninterrupted_run(
    server, make_posts, data_file, build_command, spawn, tmp_path: Path
) -> None:
    data = data_file(make_posts(POSTS, prefix="crash"))
    runner = CliRunner()
    args = ["--concurrency", "4", "--rounds", "1"]

    reference = tmp_path / "reference"
    clean = runner.invoke(app, build_command(data, reference, server, *args)[3:])
    assert clean.exit_code == 0, clean.output
    calls_per_build = server.stats()["completions"]
    assert calls_per_build == 3 * POSTS  # generate, critique (rejects), revise

    server.reset()
    server.configure(latency=0.03)
    out = tmp_path / "killed"
    cache_path = out / "knowledge.sqlite"
    rng = random.Random(2024)
    kills = orphaned = 0
    while kills < KILLS:
        before = server.stats()["completions"]
        child = spawn(build_command(data, out, server, *args))
        # A random moment: after a random number of answers (0 = during start-up), plus a bit.
        target = before + rng.randint(0, 12)
        deadline = time.monotonic() + 60
        while server.stats()["completions"] < target and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.04))
        assert child.poll() is None, "the build finished before it could be killed: give it more work"
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()  # type: ignore[union-attr]
        child.stderr.close()  # type: ignore[union-attr]
        kills += 1
        if cache_path.exists():
            assert _integrity(cache_path) == "ok"
            with KnowledgeCache(cache_path) as cache:
                # Calls in flight at the kill: leased, never stored. Only these may be asked again.
                orphaned += sum(1 for _, owner in cache.claims() if f":{child.pid}:" in owner)
    interrupted = server.stats()
    assert interrupted["completions"] < calls_per_build, "the kills left nothing to resume"

    resumed = runner.invoke(app, build_command(data, out, server, *args)[3:])
    assert resumed.exit_code == 0, resumed.output
    stats = server.stats()
    # No stored answer was paid for twice: a repeated request can only be one in flight at a kill.
    assert stats["repeated"] <= orphaned, (stats["repeated"], orphaned)
    assert stats["distinct"] == calls_per_build
    assert stats["completions"] == calls_per_build + stats["repeated"]
    # The same knowledge, record by record, as the uninterrupted build.
    name = "val_ofa_knowledge.json"
    assert (out / name).read_text(encoding="utf-8") == (reference / name).read_text(encoding="utf-8")
    assert _integrity(cache_path) == "ok"
    with KnowledgeCache(cache_path) as cache:
        assert cache.count_calls() == calls_per_build
        assert len(list(cache.results())) == POSTS
        assert cache.claims() == []
