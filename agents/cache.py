"""The persistent cache of a knowledge build: every finished LLM call, every post's result and failure.

One SQLite file in WAL mode. Each finished call is committed the moment its answer is parsed, under a
content hash of what determines it (the rendered messages, which hold the post, its demonstrations and
the earlier rounds' outputs; the template's name and version; the model and its parameters; the
output schema). So a rerun makes no call that finished before, an interrupted build (a crash, a
SIGKILL, Ctrl-C) resumes where it stopped, and two processes can share one file: SQLite serialises
their writes and ``INSERT OR IGNORE`` keeps one row per key. No API key ever reaches the file.

A call about to be made is first *claimed* (a lease row naming the process): another builder, in this
process or another, that needs the same call waits for the holder's answer instead of paying for it
again. A lease ends when its answer is stored, when its holder gives it up (a failed call), when the
holding process is gone (a killed build: checked by pid on this host) or after ``lease_s`` seconds
without renewal (the holder renews it every ``lease_s / 3`` while its call runs; a hung or partitioned
holder stops renewing).

>>> with KnowledgeCache("out/knowledge.sqlite") as cache:  # doctest: +SKIP
...     cache.export_kecpm(posts, "out/val_ofa_knowledge.json", run=report_run)
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from ..post_files import write_kecpm
from ..records import Post
from .schemas import KnowledgeFailure, KnowledgeResult, Usage

__all__ = ["CachedCall", "KnowledgeCache"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    stage TEXT NOT NULL,
    template TEXT NOT NULL,
    model TEXT NOT NULL,
    output TEXT NOT NULL,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    run TEXT NOT NULL,
    post_id TEXT NOT NULL,
    result TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (run, post_id)
);
CREATE TABLE IF NOT EXISTS failures (
    run TEXT NOT NULL,
    post_id TEXT NOT NULL,
    failure TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (run, post_id)
);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires REAL NOT NULL
);
"""

_HOST = socket.gethostname()


class CachedCall:
    """One stored call: its parsed output (JSON) and the tokens it cost when it was made."""

    __slots__ = ("input_tokens", "output", "output_tokens")

    def __init__(self, output: dict[str, Any], input_tokens: int, output_tokens: int) -> None:
        self.output = output
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens


class KnowledgeCache:
    """SQLite (WAL) store of calls, results and failures; use from one thread (the event loop's)."""

    def __init__(self, path: str | Path, *, timeout: float = 60.0, lease_s: float = 600.0) -> None:
        self.path = Path(path)
        self.lease_s = lease_s
        # host:pid:nonce: the pid lets another process on this host see that a holder was killed.
        self.owner = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: each write is its own transaction, durable as soon as the call returns.
        self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process (only a power loss can drop the last commits).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        self._db.executescript(_SCHEMA)

    # calls
    def get_call(self, key: str) -> CachedCall | None:
        row = self._db.execute("SELECT output, input_tokens, output_tokens FROM calls WHERE key = ?", (key,)).fetchone()
        return None if row is None else CachedCall(json.loads(row[0]), row[1], row[2])

    def put_call(
        self, key: str, *, stage: str, template: str, model: str, output: dict[str, Any], usage: Usage
    ) -> None:
        """Store a finished call and end its lease, in one transaction."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR IGNORE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    stage,
                    template,
                    model,
                    json.dumps(output, ensure_ascii=False),
                    usage.input_tokens,
                    usage.output_tokens,
                    time.time(),
                ),
            )
            self._db.execute("DELETE FROM claims WHERE key = ?", (key,))

    def claim(self, key: str) -> Literal["done", "mine", "busy"]:
        """Take the lease on a call before making it: ``"mine"`` (go ahead), ``"done"`` (its answer is
        stored: read it) or ``"busy"`` (a live holder is making it: wait, then ask again)."""
        now = time.time()
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            if self._db.execute("SELECT 1 FROM calls WHERE key = ?", (key,)).fetchone():
                return "done"
            row = self._db.execute("SELECT owner, expires FROM claims WHERE key = ?", (key,)).fetchone()
            if row is not None and row[1] > now and _alive(row[0]):
                return "busy"
            self._db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?)", (key, self.owner, now + self.lease_s))
        return "mine"

    def renew(self, key: str) -> None:
        """Extend this cache's lease on ``key`` by ``lease_s`` from now (its call is still running)."""
        self._db.execute(
            "UPDATE claims SET expires = ? WHERE key = ? AND owner = ?", (time.time() + self.lease_s, key, self.owner)
        )

    def release(self, key: str) -> None:
        """Give up this cache's lease on ``key`` (its call failed), so a waiting builder can try it."""
        self._db.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, self.owner))

    def claims(self) -> list[tuple[str, str]]:
        """``(key, owner)`` of the leases held now (or left by a killed build)."""
        return [(k, o) for k, o in self._db.execute("SELECT key, owner FROM claims ORDER BY key")]

    def call_stage(self, key: str) -> str | None:
        """The stage of a stored call (None when it is not stored)."""
        row = self._db.execute("SELECT stage FROM calls WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def history(self, model: str) -> list[tuple[str, dict[str, Any], int]]:
        """``(stage, output, output_tokens)`` of every stored call of ``model``, for spend estimates."""
        rows = self._db.execute("SELECT stage, output, output_tokens FROM calls WHERE model = ?", (model,))
        return [(stage, json.loads(output), tokens) for stage, output, tokens in rows]

    def count_calls(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    # results and failures, per run (a run key names the model, parameters, templates and rounds)
    def put_result(self, run: str, result: KnowledgeResult) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?)",
                (run, result.post_id, result.model_dump_json(), time.time()),
            )
            self._db.execute("DELETE FROM failures WHERE run = ? AND post_id = ?", (run, result.post_id))

    def put_failure(self, run: str, failure: KnowledgeFailure) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?)",
            (run, failure.post_id, failure.model_dump_json(), time.time()),
        )

    def drop_failures(self, run: str, post_ids: Sequence[str]) -> None:
        """Forget failures that no longer apply (a record that was unreadable and has been fixed)."""
        self._db.executemany("DELETE FROM failures WHERE run = ? AND post_id = ?", [(run, i) for i in post_ids])

    def result(self, post_id: str, run: str | None = None) -> KnowledgeResult | None:
        """A post's result in ``run``, or its latest result in any run."""
        query = "SELECT result FROM results WHERE post_id = ?"
        args: tuple[str, ...] = (post_id,)
        if run is not None:
            query += " AND run = ?"
            args += (run,)
        row = self._db.execute(query + " ORDER BY created DESC LIMIT 1", args).fetchone()
        return None if row is None else KnowledgeResult.model_validate_json(row[0])

    def results(self, run: str | None = None) -> Iterator[KnowledgeResult]:
        query, args = "SELECT result FROM results", ()
        if run is not None:
            query, args = query + " WHERE run = ?", (run,)
        for (text,) in self._db.execute(query + " ORDER BY created", args):
            yield KnowledgeResult.model_validate_json(text)

    def failures(self, run: str | None = None) -> list[KnowledgeFailure]:
        query, args = "SELECT failure FROM failures", ()
        if run is not None:
            query, args = query + " WHERE run = ?", (run,)
        return [KnowledgeFailure.model_validate_json(text) for (text,) in self._db.execute(query, args)]

    def runs(self) -> list[str]:
        """Run keys, the most recently written first."""
        rows = self._db.execute("SELECT run FROM results GROUP BY run ORDER BY MAX(created) DESC").fetchall()
        return [r[0] for r in rows]

    def export_kecpm(self, posts: Sequence[Post], path: str | Path, *, run: str) -> tuple[Path, list[str]]:
        """Write ``posts`` with their built knowledge in the KECPM ``*_ofa_knowledge.json`` format.

        Returns the path and the ids of posts that have no result in ``run`` (written with no knowledge,
        so the file still lines up record by record with its split).
        """
        missing: list[str] = []
        filled = []
        for post in posts:
            found = self.result(post.id, run)
            if found is None:
                missing.append(post.id)
            filled.append(post.model_copy(update={"knowledge": found.knowledge if found else []}))
        return write_kecpm(filled, path, caption=True, knowledge=True, json_lines=True), missing

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> KnowledgeCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _alive(owner: str) -> bool:
    """Whether a lease holder may still be working: always, unless it is a process of this host that is gone."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != _HOST or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
