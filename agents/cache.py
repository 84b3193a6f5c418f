"""The persistent cache of a knowledge build: every finished LLM call, every post's result and failure.

One SQLite file in WAL mode. Each finished call is handed to the cache's writer thread the moment its
answer is parsed (committed within milliseconds, in order, always before the result of its post), under a
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

import asyncio
import json
import logging
import os
import queue
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

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
T = TypeVar("T")
log = logging.getLogger(__name__)


class CachedCall:
    """One stored call: its parsed output (JSON) and the tokens it cost when it was made."""

    __slots__ = ("input_tokens", "output", "output_tokens")

    def __init__(self, output: dict[str, Any], input_tokens: int, output_tokens: int) -> None:
        self.output = output
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens


def _enable_wal(db: sqlite3.Connection, timeout: float) -> None:
    """Switch ``db`` to WAL, retrying while another connection holds the file.

    SQLite answers a journal-mode change with SQLITE_BUSY at once, without its busy handler, while another
    connection holds a write transaction on the file (two builders or processes opening one new cache
    together): waiting here is what ``timeout`` promises. The mode is stored in the file, so later
    connections skip the switch.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class KnowledgeCache:
    """SQLite (WAL) store of calls, results and failures.

    The sync methods may be called from any thread. The async twins (``alookup``, ``aput_call``,
    ``aput_result``, ...) keep SQLite off the event loop: writes go to one writer thread that commits
    whatever is queued in one transaction (a write lock held elsewhere stalls only the writes, never the
    loop), lookups and claims to one reader thread on a second connection.
    ``claim_timeout`` bounds how long an async claim waits for a write lock held by another connection:
    past it the call goes ahead unleased rather than stall the batch (at worst another process pays for
    the same call too; ``INSERT OR IGNORE`` still keeps one answer).
    """

    def __init__(
        self, path: str | Path, *, timeout: float = 60.0, lease_s: float = 600.0, claim_timeout: float = 0.25
    ) -> None:
        self.path = Path(path)
        self.lease_s = lease_s
        self.timeout = timeout
        self.claim_timeout = claim_timeout
        # host:pid:nonce: the pid lets another process on this host see that a holder was killed.
        self.owner = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: each write is its own transaction, durable as soon as the call returns.
        self._db = self._connect(timeout)
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()  # one transaction at a time on self._db, whichever thread runs it
        self._writer: _Writer | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._reader_db: sqlite3.Connection | None = None
        self._threads_lock = threading.Lock()
        self._callers = threading.local()  # a read-only connection per calling thread (see _stored)
        self._caller_dbs: list[sqlite3.Connection] = []

    def _connect(self, timeout: float) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        _enable_wal(db, timeout)
        # NORMAL in WAL mode survives a killed process (only a power loss can drop the last commits).
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        return db

    def _transaction(self, op: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            return op(self._db)

    # calls
    def get_call(self, key: str) -> CachedCall | None:
        with self._lock:
            return _get_call(self._db, key)

    def put_call(
        self, key: str, *, stage: str, template: str, model: str, output: dict[str, Any], usage: Usage
    ) -> None:
        """Store a finished call and end its lease, in one transaction."""
        self._transaction(_put_call_op(key, stage, template, model, output, usage))

    def claim(self, key: str) -> Literal["done", "mine", "busy"]:
        """Take the lease on a call before making it: ``"mine"`` (go ahead), ``"done"`` (its answer is
        stored: read it) or ``"busy"`` (a live holder is making it: wait, then ask again)."""
        return self._transaction(_claim_op(key, self.owner, self.lease_s))

    def renew(self, key: str) -> None:
        """Extend this cache's lease on ``key`` by ``lease_s`` from now (its call is still running)."""
        self._transaction(_renew_op(key, self.owner, self.lease_s))

    def release(self, key: str) -> None:
        """Give up this cache's lease on ``key`` (its call failed), so a waiting builder can try it."""
        self._transaction(_release_op(key, self.owner))

    def claims(self) -> list[tuple[str, str]]:
        """``(key, owner)`` of the leases held now (or left by a killed build)."""
        self.flush()
        with self._lock:
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
        self.flush()
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    # results and failures, per run (a run key names the model, parameters, templates and rounds)
    def put_result(self, run: str, result: KnowledgeResult) -> None:
        self._transaction(_put_result_op(run, result))

    def put_failure(self, run: str, failure: KnowledgeFailure) -> None:
        self._transaction(_put_failure_op(run, failure))

    def drop_failures(self, run: str, post_ids: Sequence[str]) -> None:
        """Forget failures that no longer apply (a record that was unreadable and has been fixed)."""
        self._transaction(_drop_failures_op(run, post_ids))

    def result(self, post_id: str, run: str | None = None) -> KnowledgeResult | None:
        """A post's result in ``run``, or its latest result in any run."""
        query = "SELECT result FROM results WHERE post_id = ?"
        args: tuple[str, ...] = (post_id,)
        if run is not None:
            query += " AND run = ?"
            args += (run,)
        self.flush()
        with self._lock:
            row = self._db.execute(query + " ORDER BY created DESC LIMIT 1", args).fetchone()
        return None if row is None else KnowledgeResult.model_validate_json(row[0])

    def results(self, run: str | None = None) -> Iterator[KnowledgeResult]:
        query, args = "SELECT result FROM results", ()
        if run is not None:
            query, args = query + " WHERE run = ?", (run,)
        self.flush()
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created", args).fetchall()
        for (text,) in rows:
            yield KnowledgeResult.model_validate_json(text)

    def failures(self, run: str | None = None) -> list[KnowledgeFailure]:
        query, args = "SELECT failure FROM failures", ()
        if run is not None:
            query, args = query + " WHERE run = ?", (run,)
        self.flush()
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [KnowledgeFailure.model_validate_json(text) for (text,) in rows]

    def runs(self) -> list[str]:
        """Run keys, the most recently written first."""
        self.flush()
        with self._lock:
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

    # -- async twins: SQLite off the event loop ---------------------------------------------------

    async def alookup(self, key: str) -> CachedCall | Literal["mine", "busy"]:
        """One reader-thread hop: the stored answer of ``key``, else ``"mine"`` (lease taken, or the
        file write-locked past ``claim_timeout``: go ahead) or ``"busy"`` (a live holder is making it)."""
        if (hit := self._stored(key)) is not None:
            return hit
        return await asyncio.get_running_loop().run_in_executor(self._reader_pool(), self._lookup, key)

    async def aget_call(self, key: str) -> CachedCall | None:
        return await asyncio.get_running_loop().run_in_executor(
            self._reader_pool(), lambda: _get_call(self._read_db(), key)
        )

    async def aclaim(self, key: str) -> Literal["done", "mine", "busy"]:
        found = await self.alookup(key)
        return "done" if isinstance(found, CachedCall) else found

    async def aput_call(
        self, key: str, *, stage: str, template: str, model: str, output: dict[str, Any], usage: Usage
    ) -> None:
        """:meth:`put_call` through the writer thread; returns once the call is committed."""
        await asyncio.wrap_future(self._write(_put_call_op(key, stage, template, model, output, usage)))

    def put_call_soon(
        self, key: str, *, stage: str, template: str, model: str, output: dict[str, Any], usage: Usage
    ) -> Future[None]:
        """Queue :meth:`put_call` on the writer thread and return at once.

        Writes commit in order: a result queued after (``aput_result``) lands with or after its calls, so a
        post reported done has all its calls stored, and a write lock held elsewhere stalls no post's next
        call. A failed write is logged (and the result write that follows it fails loudly).
        """
        future = self._write(_put_call_op(key, stage, template, model, output, usage))
        future.add_done_callback(_log_failed_write)
        return future

    async def arenew(self, key: str) -> None:
        await asyncio.wrap_future(self._write(_renew_op(key, self.owner, self.lease_s)))

    def release_soon(self, key: str) -> None:
        """Queue :meth:`release` on the writer thread without waiting (safe while being cancelled)."""
        self._write(_release_op(key, self.owner))

    async def arelease(self, key: str) -> None:
        await asyncio.wrap_future(self._write(_release_op(key, self.owner)))

    async def aput_result(self, run: str, result: KnowledgeResult) -> None:
        await asyncio.wrap_future(self._write(_put_result_op(run, result)))

    async def aput_failure(self, run: str, failure: KnowledgeFailure) -> None:
        await asyncio.wrap_future(self._write(_put_failure_op(run, failure)))

    def flush(self) -> None:
        """Wait until every queued write is committed."""
        writer = self._writer
        if writer is not None and threading.current_thread() is not writer.thread:
            writer.submit(None).result()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def _write(self, op: Callable[[sqlite3.Connection], Any]) -> Future[Any]:
        with self._threads_lock:
            if self._writer is None:
                self._writer = _Writer(self)
        return self._writer.submit(op)

    def _reader_pool(self) -> ThreadPoolExecutor:
        with self._threads_lock:
            if self._reader is None:
                self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kecpm-cache-read")
            return self._reader

    def _read_db(self) -> sqlite3.Connection:
        if self._reader_db is None:
            self._reader_db = self._connect(self.claim_timeout)
        return self._reader_db

    def _stored(self, key: str) -> CachedCall | None:
        """The stored answer of ``key`` read on the calling thread, or None (not stored, or not readable
        at once). In WAL mode a read never waits for a writer, and with a busy timeout of 0 it never
        waits at all: a hit costs microseconds on the loop instead of a thread hop. Measured with
        benchmarks/knowledge_bench.py (4,000 posts x 3 calls, all cached): 10.7 s through the reader
        thread, see the README for the figure with this path."""
        db = getattr(self._callers, "db", None)
        try:
            if db is None:
                db = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
                with self._threads_lock:
                    self._caller_dbs.append(db)
                self._callers.db = db
            return _get_call(db, key)
        except sqlite3.OperationalError:  # locked for a moment (a checkpoint): the reader thread decides
            return None

    def _lookup(self, key: str) -> CachedCall | Literal["mine", "busy"]:
        db = self._read_db()
        if (hit := _get_call(db, key)) is not None:  # WAL: a read never waits for a writer
            return hit
        try:
            with db:
                db.execute("BEGIN IMMEDIATE")
                state = _claim_op(key, self.owner, self.lease_s)(db)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            return "mine"
        if state == "done":
            return _get_call(db, key) or "mine"
        return state

    def close(self) -> None:
        """Commit what is queued, then close the threads and connections."""
        with self._threads_lock:
            writer, self._writer = self._writer, None
            reader, self._reader = self._reader, None
        if writer is not None:
            writer.stop()
        if reader is not None:
            reader.shutdown(wait=True)
        if self._reader_db is not None:
            self._reader_db.close()
            self._reader_db = None
        with self._threads_lock:
            callers, self._caller_dbs = self._caller_dbs, []
        for db in callers:
            db.close()
        self._callers = threading.local()
        with self._lock:
            self._db.close()

    def __enter__(self) -> KnowledgeCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Writer:
    """The cache's writer thread: each wake-up commits every queued write in one transaction."""

    def __init__(self, cache: KnowledgeCache) -> None:
        self.cache = cache
        self.queue: queue.SimpleQueue[tuple[Callable[[sqlite3.Connection], Any] | None, Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self.thread = threading.Thread(target=self._run, name="kecpm-cache-write", daemon=True)
        self.thread.start()

    def submit(self, op: Callable[[sqlite3.Connection], Any] | None) -> Future[Any]:
        """Queue ``op`` (None: a barrier that resolves once everything before it is committed)."""
        future: Future[Any] = Future()
        self.queue.put((op, future))
        return future

    def stop(self) -> None:
        self.queue.put(None)
        self.thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self.queue.get()
            batch = []
            while True:
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
            self._commit(batch)

    def _commit(self, batch: list[tuple[Callable[[sqlite3.Connection], Any] | None, Future[Any]]]) -> None:
        ops = [(op, future) for op, future in batch if op is not None]
        try:
            results = self.cache._transaction(lambda db: [op(db) for op, _ in ops]) if ops else []
        except Exception:
            # One bad write must not fail the others: commit them one by one, each with its own outcome.
            for op, future in ops:
                try:
                    _resolve(future, self.cache._transaction(op), None)
                except Exception as exc:
                    _resolve(future, None, exc)
        else:
            for (_, future), result in zip(ops, results, strict=True):
                _resolve(future, result, None)
        for op, future in batch:
            if op is None:
                _resolve(future, None, None)


def _log_failed_write(future: Future[Any]) -> None:
    if not future.cancelled() and (error := future.exception()) is not None:
        log.error("the knowledge cache could not store a call: %s", error)


def _resolve(future: Future[Any], result: Any, error: BaseException | None) -> None:
    if future.set_running_or_notify_cancel():
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


# -- the statements, each run inside a transaction ------------------------------------------------


def _get_call(db: sqlite3.Connection, key: str) -> CachedCall | None:
    row = db.execute("SELECT output, input_tokens, output_tokens FROM calls WHERE key = ?", (key,)).fetchone()
    return None if row is None else CachedCall(json.loads(row[0]), row[1], row[2])


def _put_call_op(
    key: str, stage: str, template: str, model: str, output: dict[str, Any], usage: Usage
) -> Callable[[sqlite3.Connection], None]:
    row = (
        key,
        stage,
        template,
        model,
        json.dumps(output, ensure_ascii=False),
        usage.input_tokens,
        usage.output_tokens,
        time.time(),
    )

    def op(db: sqlite3.Connection) -> None:
        db.execute("INSERT OR IGNORE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
        db.execute("DELETE FROM claims WHERE key = ?", (key,))

    return op


def _claim_op(key: str, owner: str, lease_s: float) -> Callable[[sqlite3.Connection], Literal["done", "mine", "busy"]]:
    def op(db: sqlite3.Connection) -> Literal["done", "mine", "busy"]:
        now = time.time()
        if db.execute("SELECT 1 FROM calls WHERE key = ?", (key,)).fetchone():
            return "done"
        row = db.execute("SELECT owner, expires FROM claims WHERE key = ?", (key,)).fetchone()
        if row is not None and row[1] > now and _alive(row[0]):
            return "busy"
        db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?)", (key, owner, now + lease_s))
        return "mine"

    return op


def _renew_op(key: str, owner: str, lease_s: float) -> Callable[[sqlite3.Connection], None]:
    def op(db: sqlite3.Connection) -> None:
        db.execute("UPDATE claims SET expires = ? WHERE key = ? AND owner = ?", (time.time() + lease_s, key, owner))

    return op


def _release_op(key: str, owner: str) -> Callable[[sqlite3.Connection], None]:
    def op(db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, owner))

    return op


def _put_result_op(run: str, result: KnowledgeResult) -> Callable[[sqlite3.Connection], None]:
    row = (run, result.post_id, result.model_dump_json(), time.time())

    def op(db: sqlite3.Connection) -> None:
        db.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?)", row)
        db.execute("DELETE FROM failures WHERE run = ? AND post_id = ?", (run, result.post_id))

    return op


def _put_failure_op(run: str, failure: KnowledgeFailure) -> Callable[[sqlite3.Connection], None]:
    row = (run, failure.post_id, failure.model_dump_json(), time.time())

    def op(db: sqlite3.Connection) -> None:
        db.execute("INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?)", row)

    return op


def _drop_failures_op(run: str, post_ids: Sequence[str]) -> Callable[[sqlite3.Connection], None]:
    rows = [(run, i) for i in post_ids]

    def op(db: sqlite3.Connection) -> None:
        db.executemany("DELETE FROM failures WHERE run = ? AND post_id = ?", rows)

    return op


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
