"""Retrieval fixtures: the embedding model (loaded once), a real Chroma server, a network guard."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kecpm.retrieval import MiniLMEmbeddings, default_embeddings

CHROMA = Path(sys.executable).with_name("chroma")


@pytest.fixture(scope="session")
def embeddings() -> MiniLMEmbeddings:
    """The offline MiniLM, shared with the CLI's default so the weights load once per session."""
    return default_embeddings()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def unused_port() -> int:
    """A loopback port that nothing listens on."""
    return free_port()


@dataclass
class ChromaServer:
    """A ``chroma run`` process on loopback, which a test may stop and start again."""

    path: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.process = subprocess.Popen(
            [str(CHROMA), "run", "--host", "127.0.0.1", "--port", str(self.port), "--path", str(self.path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"chroma run exited with {self.process.returncode}") from None
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"chroma run did not listen on port {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def _server(path: Path) -> Iterator[ChromaServer]:
    if not CHROMA.exists():
        pytest.skip(f"the chroma CLI is not installed next to {sys.executable}")
    server = ChromaServer(path=path, port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    """One Chroma server for the session's read-mostly tests."""
    yield from _server(tmp_path_factory.mktemp("chroma-server"))


@pytest.fixture
def own_chroma_server(tmp_path: Path) -> Iterator[ChromaServer]:
    """A Chroma server of this test alone, which it may stop and restart."""
    yield from _server(tmp_path / "chroma-server")


LOOPBACK = ("127.0.0.1", "::1", "localhost")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Refuses, and records, every name lookup and socket connection that is not to loopback."""
    attempts: list[object] = []
    original_connect = socket.socket.connect
    original_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: object) -> object:
        host = address[0] if isinstance(address, tuple) else address
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in LOOPBACK:
            attempts.append(address)
            raise OSError(f"network access in a test: {address!r}")
        return original_connect(self, address)

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if host not in LOOPBACK and host is not None:
            attempts.append(host)
            raise socket.gaierror(f"network access in a test: {host!r}")
        return original_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts
