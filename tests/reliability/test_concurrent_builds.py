"""Point 4: two processes building the same posts into one cache at the same moment: no corruption, no
duplicate entries, and (through the cache's per-call leases) no call paid for twice."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from kecpm.agents import KnowledgeCache
from kecpm.post_files import read_kecpm

POSTS = 60


def test_two_processes_share_one_cache_without_paying_twice(
    server, make_posts, data_file, build_command, spawn, tmp_path: Path
) -> None:
    posts = make_posts(POSTS, prefix="twin")
    data = data_file(posts)
    server.configure(latency=0.03)
    cache_path = tmp_path / "shared" / "knowledge.sqlite"
    args = ["--concurrency", "4", "--rounds", "1", "--cache", str(cache_path)]
    children = [spawn(build_command(data, tmp_path / name, server, *args)) for name in ("a", "b")]
    outputs = [child.communicate(timeout=180) for child in children]
    for child, (_, stderr) in zip(children, outputs, strict=True):
        assert child.returncode == 0, stderr.decode(errors="replace")[-2000:]

    stats = server.stats()
    assert stats["repeated"] == 0, f"{stats['repeated']} calls were paid for twice"
    assert stats["completions"] == stats["distinct"] == 3 * POSTS
    with sqlite3.connect(cache_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM calls").fetchone() == (3 * POSTS, 3 * POSTS)
        rows, distinct = db.execute("SELECT COUNT(*), COUNT(DISTINCT run || '/' || post_id) FROM results").fetchone()
        assert rows == distinct == POSTS
        assert db.execute("SELECT COUNT(*) FROM failures").fetchone()[0] == 0
    with KnowledgeCache(cache_path) as cache:
        assert cache.claims() == []
    name = "val_ofa_knowledge.json"
    a, b = read_kecpm(tmp_path / "a" / name), read_kecpm(tmp_path / "b" / name)
    assert [p.id for p in a] == [p.id for p in posts]
    assert [p.knowledge for p in a] == [p.knowledge for p in b]
    assert all(p.knowledge for p in a)
