"""Fixtures of the reliability tests: the loopback LLM server, a KECPM data file, a CLI runner helper."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from kecpm.post_files import write_kecpm
from kecpm.records import Post
from kecpm.synthetic import synthetic_posts
from kecpm.testing import LoopbackServer


@pytest.fixture(scope="module")
def loopback() -> Iterator[LoopbackServer]:
    """A loopback OpenAI-compatible server in a thread, shared by a module's tests (reset per test)."""
    with LoopbackServer(latency=0.005, retry_after=0.1, hang=2.0) as server:
        yield server


@pytest.fixture
def server(loopback: LoopbackServer) -> LoopbackServer:
    loopback.configure(
        latency=0.005, faults={}, script=[], accept=False, api_key=None, retry_after=0.1, hang=2.0, seed=0
    )
    loopback.reset()
    return loopback


def _make_posts(n: int, *, seed: int = 5, prefix: str = "rel") -> list[Post]:
    """``n`` valid synthetic posts with distinct texts (so no two prompts coincide)."""
    return [
        Post(
            id=f"{prefix}-{i}.jpg",
            tokens=[*p.tokens, f"#{i}"],
            img_id=f"{prefix}-{i}.jpg",
            image_descriptions=p.image_descriptions,
            quintuples=p.quintuples,
        )
        for i, p in enumerate(synthetic_posts(n, seed=seed, id_prefix=prefix))
    ]


@pytest.fixture
def data_file(tmp_path: Path):
    """``data_file(posts, name="val.json")`` -> a KECPM JSON array file of those posts."""

    def write(posts: Sequence[Post], name: str = "val.json") -> Path:
        return write_kecpm(posts, tmp_path / "data" / name)

    return write


def _spawn(command: Sequence[str], **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        list(command),
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.fixture
def make_posts():
    """``make_posts(n, seed=, prefix=)`` -> ``n`` valid posts with distinct texts."""
    return _make_posts


@pytest.fixture
def build_command(knowledge_build_args):
    """``build_command(data, out, server, *extra)`` -> a ``kecpm knowledge build`` command line."""

    def command(data: Path, out: Path, server: LoopbackServer, *extra: str) -> list[str]:
        return [sys.executable, "-m", "kecpm", *knowledge_build_args(data, out, server, *extra)]

    return command


@pytest.fixture
def spawn():
    """``spawn(command, **env)`` -> a child process (offline, output piped)."""
    return _spawn
