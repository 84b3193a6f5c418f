"""A write lock held on the call cache by another connection stalls neither the event loop nor the other
posts' LLM calls, and the batch loses nothing."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from kecpm.agents import KnowledgeBuilder, KnowledgeCache
from kecpm.llm import LLMConfig, retry_policy
from kecpm.records import Post
from kecpm.testing import LoopbackServer

HOLD_S = 2.0  # at least; longer on a loaded machine, until the batch has moved on (at most MAX_HOLD_S)
MAX_HOLD_S = 30.0
CONCURRENCY = 4
CALLS_WHILE_HELD = 2


async def test_a_held_write_lock_does_not_stop_the_batch(server: LoopbackServer, posts: list[Post], tmp_path: Path):
    server.configure(latency=0.05)
    path = tmp_path / "k.sqlite"
    batch = posts[:8]
    llm = LLMConfig(base_url=server.base_url, model="loopback", timeout=10.0, max_tokens_param="max_tokens")
    window: dict[str, float] = {}

    def hold_lock() -> None:
        while server.stats()["completions"] < 2:
            time.sleep(0.01)
        holder = sqlite3.connect(path, timeout=10, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # the write lock, as another process's long write would hold it
        window["start"], window["calls_before"] = time.monotonic(), server.stats()["completions"]
        # Timed by progress, not the clock alone, so a loaded machine (slow scheduling) does not fail it.
        while time.monotonic() - window["start"] < HOLD_S or (
            server.stats()["completions"] - window["calls_before"] < CALLS_WHILE_HELD
            and time.monotonic() - window["start"] < MAX_HOLD_S
        ):
            time.sleep(0.01)
        window["calls_after"] = server.stats()["completions"]
        holder.execute("COMMIT")
        holder.close()

    gaps: list[float] = []

    async def heartbeat() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.02)
            now = time.monotonic()
            if "start" in window and "calls_after" not in window:  # while the lock is held
                gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    holder = threading.Thread(target=hold_lock)
    holder.start()
    async with KnowledgeBuilder(
        llm, cache=path, concurrency=CONCURRENCY, progress=False, retry=retry_policy(2)
    ) as builder:
        report = await builder.abuild(batch)
        run_key = builder.run_key
    holder.join()
    beat.cancel()
    # Other posts' calls went on while the lock was held, and the loop never stalled.
    assert window["calls_after"] - window["calls_before"] >= CALLS_WHILE_HELD, window
    assert max(gaps) < 0.5, max(gaps)
    # Nothing lost: every post built, every call stored once, a rerun pays for nothing.
    assert report.succeeded == len(batch) and not report.failures
    calls = server.stats()["completions"]
    with KnowledgeCache(path) as cache:
        assert cache.count_calls() == calls == 3 * len(batch)
        assert {r.post_id for r in cache.results(run_key)} == {p.id for p in batch}
        assert cache.claims() == []
    async with KnowledgeBuilder(llm, cache=path, concurrency=4, progress=False) as builder:
        again = await builder.abuild(batch)
    assert again.calls == 0 and server.stats()["completions"] == calls


async def test_async_twins_match_the_sync_methods(tmp_path: Path) -> None:
    from kecpm.agents import Usage

    cache = KnowledgeCache(tmp_path / "k.sqlite")
    assert await cache.alookup("k1") == "mine"
    assert [key for key, _ in cache.claims()] == ["k1"]
    await cache.aput_call("k1", stage="generate", template="generate@v1", model="m", output={"a": 1}, usage=Usage())
    assert (await cache.aget_call("k1")).output == {"a": 1}
    assert cache.get_call("k1").output == {"a": 1}
    assert await cache.aclaim("k1") == "done" and cache.claims() == []
    await cache.aclose()


def test_a_new_cache_waits_for_a_write_held_on_its_file(tmp_path: Path) -> None:
    # SQLite refuses the switch to WAL at once, busy handler or not, while another connection holds a
    # write transaction: two builders opening one new cache together (CI saw it) must wait, not fail.
    path = tmp_path / "k.sqlite"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE held (x)")
    other.execute("BEGIN IMMEDIATE")
    threading.Timer(0.3, other.execute, ("COMMIT",)).start()
    started = time.monotonic()
    with KnowledgeCache(path, timeout=10) as cache:
        assert cache.count_calls() == 0
        assert cache._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert time.monotonic() - started >= 0.25
    other.close()


def test_a_write_held_past_the_timeout_is_still_an_error(tmp_path: Path) -> None:
    path = tmp_path / "k.sqlite"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("CREATE TABLE held (x)")
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            KnowledgeCache(path, timeout=0.2)
    finally:
        other.execute("COMMIT")
        other.close()
