"""The chat client: any OpenAI-compatible endpoint, through a chat model that this object owns and closes.

>>> config = LLMConfig(base_url="http://127.0.0.1:8000/v1", model="my-model")  # doctest: +SKIP
>>> async with ChatClient(config) as client:  # doctest: +SKIP
...     answer = await client.model.ainvoke("hello")

``LLMConfig.transport`` chooses the model: ``"lean"`` (the default) is kecpm's
:class:`~kecpm.llm.chat_model.ChatCompletionsModel` over one keep-alive HTTP pool, about a fifth of
ChatOpenAI's client CPU per call at 256 in flight (``benchmarks/knowledge_bench.py``); ``"openai"`` is
LangChain's ``ChatOpenAI`` over the openai SDK, for what only it does (the Responses API, streaming).
Either way the token cap goes out as ``LLMConfig.max_tokens_param`` says: ``max_completion_tokens``
(OpenAI's name), or ``max_tokens`` for servers such as llama-cpp-python's, which ignore the other.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ..errors import KecpmError
from .config import LLMConfig

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

__all__ = ["ChatClient"]


class ChatClient:
    """A LangChain chat model for ``config``, over an HTTP client that this object owns and closes.

    The model makes no retries: they belong to the chain's tenacity policy, which honours Retry-After
    and records what it did. It is kept over the SDK's own retries because it works for any LangChain chat
    model and counts every retry in the build report. ``requests_per_second`` becomes LangChain's
    ``InMemoryRateLimiter`` on either transport. Use it as ``async with``; closing matters (a dropped
    client can leave later sockets unpolled).
    """

    def __init__(self, config: LLMConfig, *, base_url: str | None = None, max_connections: int = 256) -> None:
        url = base_url or config.base_url
        if url is None:
            raise KecpmError("ChatClient needs a base URL: start an EmbeddedServer for the embedded model")
        self.config = config
        self._closers: list[Any] = []
        if config.transport == "lean":
            self.model: BaseChatModel = self._lean(config, url, max_connections)
        else:
            self.model = self._openai(config, url, max_connections)
        if config.requests_per_second is not None:
            from langchain_core.rate_limiters import InMemoryRateLimiter

            self.model.rate_limiter = InMemoryRateLimiter(
                requests_per_second=config.requests_per_second,
                check_every_n_seconds=min(0.1, 0.5 / config.requests_per_second),
                max_bucket_size=config.burst,
            )

    def _lean(self, config: LLMConfig, url: str, max_connections: int) -> BaseChatModel:
        from .chat_model import ChatCompletionsModel

        model = ChatCompletionsModel(
            model=config.model,
            base_url=url,
            api_key=config.resolve_key(),
            temperature=config.temperature,
            max_tokens=config.max_tokens,
            max_tokens_param=config.max_tokens_param,
            seed=config.seed,
            timeout=config.timeout,
            max_connections=max_connections,
        )
        self._closers.append(model.aclose)
        return model

    def _openai(self, config: LLMConfig, url: str, max_connections: int) -> BaseChatModel:
        import openai
        from langchain_openai import ChatOpenAI

        # openai 3 runs on httpx2, older releases on httpx: take Limits from the package it was built on.
        http = importlib.import_module(openai.DefaultAsyncHttpxClient.__mro__[1].__module__.split(".")[0])
        http_client = openai.DefaultAsyncHttpxClient(
            limits=http.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            timeout=config.timeout,
        )
        client = openai.AsyncOpenAI(
            base_url=url,
            api_key=config.resolve_key().get_secret_value(),
            max_retries=0,
            timeout=config.timeout,
            http_client=http_client,
        )
        self._closers += [client.close, http_client.aclose]
        kwargs: dict[str, Any] = {}
        if config.seed is not None:
            kwargs["seed"] = config.seed
        if config.max_tokens_param == "max_tokens":
            # Past ChatOpenAI's renaming of max_tokens: the openai client merges extra_body last.
            kwargs["extra_body"] = {"max_tokens": config.max_tokens}
        else:
            kwargs["max_tokens"] = config.max_tokens
        return ChatOpenAI(
            model=config.model,
            temperature=config.temperature,
            async_client=client.chat.completions,
            root_async_client=client,
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
        closers, self._closers = self._closers, []
        for close in closers:
            await close()

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
