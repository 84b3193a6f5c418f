"""kecpm.aio: sync calls that work with and without a running event loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from kecpm.aio import LoopThread, run_sync, shared_loop


async def _where() -> tuple[str, int]:
    await asyncio.sleep(0)
    return threading.current_thread().name, id(asyncio.get_running_loop())


def test_without_a_loop_it_is_asyncio_run() -> None:
    name, _ = run_sync(_where())
    assert name == threading.current_thread().name


def test_inside_a_running_loop_it_runs_on_the_private_loop_thread() -> None:
    async def notebook_cell() -> tuple[str, int]:
        return run_sync(_where())

    name, loop_id = asyncio.run(notebook_cell())
    assert name == "kecpm-sync"
    # persistent: the same loop every time, so loop-bound clients keep working across calls
    assert run_sync(_where(), persistent=True)[1] == loop_id == id(shared_loop().loop)


def test_errors_surface_in_the_caller() -> None:
    async def fail() -> None:
        raise KeyError("boom")

    async def cell() -> None:
        run_sync(fail())

    with pytest.raises(KeyError, match="boom"):
        asyncio.run(cell())


def test_a_loop_thread_refuses_a_sync_call_from_itself_and_stops_cleanly() -> None:
    thread = LoopThread("kecpm-test")

    async def inner() -> None:
        thread.run(_where())

    with pytest.raises(RuntimeError, match="deadlock"):
        thread.run(inner())
    assert thread.running
    thread.stop()
    assert not thread.running
    assert thread.run(_where())[0] == "kecpm-test"  # restarts on demand
    thread.stop()
