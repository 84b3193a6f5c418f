"""The chat client: any OpenAI-compatible endpoint through ``ChatOpenAI``, over a client it owns.

>>> config = LLMConfig(base_url="http://127.0.0.1:8000/v1", model="my-model")  # doctest: +SKIP
>>> async with ChatClient(config) as client:  # doctest: +SKIP
...     answer = await client.model.ainvoke("hello")

ChatOpenAI sends the token cap as ``max_completion_tokens``, which llama-cpp-python's server ignores;
``LLMConfig.max_tokens_param="max_tokens"`` (set for the embedded server) sends ``max_tokens`` instead.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ..errors import KecpmError
from .config import LLMConfig

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI

__all__ = ["ChatClient"]


class ChatClient:
    """A ``ChatOpenAI`` over an ``AsyncOpenAI`` client that this object owns and closes.

    The client is built with ``max_retries=0``: retries belong to the chain's tenacity policy, which
    honours Retry-After and records what it did. It is kept over the SDK's own retries because it works
    for any LangChain chat model (not only OpenAI's client) and counts every retry in the build report;
    it adds no request of its own. Use it as ``async with``; closing matters (a dropped
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
        if config.requests_per_second is not None:
            from langchain_core.rate_limiters import InMemoryRateLimiter

            kwargs["rate_limiter"] = InMemoryRateLimiter(
                requests_per_second=config.requests_per_second,
                check_every_n_seconds=min(0.1, 0.5 / config.requests_per_second),
                max_bucket_size=config.burst,
            )
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
