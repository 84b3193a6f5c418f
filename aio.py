"""Sync wrappers that work everywhere: a plain script, a notebook cell, an async LangGraph node.

``asyncio.run`` raises inside a running event loop (Jupyter runs one), so every sync method of kecpm goes
through :func:`run_sync`: with no loop running it is ``asyncio.run``; inside a loop it runs the
coroutine on a private loop thread and blocks the caller until it finishes (the caller asked for a
sync call; the coroutine itself never runs on the caller's loop, so nothing deadlocks).

Objects that keep loop-bound resources between calls (HTTP clients, a knowledge builder) own a
:class:`LoopThread` and run every sync call on it, so those resources always meet the same loop.

>>> from kecpm.aio import run_sync
>>> async def answer() -> int:
...     return 42
>>> run_sync(answer())
42
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread", "run_sync", "shared_loop"]

T = TypeVar("T")


class LoopThread:
    """An event loop running forever in a daemon thread; :meth:`run` submits a coroutine and waits."""

    def __init__(self, name: str = "kecpm-loop") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop (started now if it is not running)."""
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=self.name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    @property
    def running(self) -> bool:
        return self._loop is not None and self._loop.is_running()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on this thread's loop and return its result (its exception is raised here).

        Ctrl-C (or any exception while waiting) cancels the coroutine instead of leaving it running.
        """
        loop = self.loop
        if _running_loop() is loop:
            coro.close()
            raise RuntimeError(f"{self.name}: a sync call from inside its own loop would deadlock; await it")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def stop(self) -> None:
        """Stop the loop and wait for its thread (pending tasks are cancelled first)."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or loop.is_closed():
            return

        async def cancel_pending() -> None:
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_pending(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None and thread is not threading.current_thread():
            thread.join()
            loop.close()


_SHARED = LoopThread("kecpm-sync")


def shared_loop() -> LoopThread:
    """The process-wide private loop thread that :func:`run_sync` uses inside a running loop."""
    return _SHARED


def run_sync(coro: Coroutine[Any, Any, T], *, persistent: bool = False) -> T:
    """Run ``coro`` to completion from sync code, whether or not an event loop is running here.

    ``persistent=True`` always uses the shared loop thread (for coroutines that reuse loop-bound clients
    across calls); otherwise ``asyncio.run`` is used when no loop is running.
    """
    if not persistent and _running_loop() is None:
        return asyncio.run(coro)
    return _SHARED.run(coro)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
