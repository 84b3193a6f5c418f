"""A LangChain chat model for any OpenAI-compatible ``/chat/completions`` endpoint, over kecpm's lean HTTP
pool (:mod:`kecpm.llm.transport`): the default transport of :class:`~kecpm.llm.ChatClient`.

It is a real ``BaseChatModel`` (callbacks, tracing, ``bind_tools``, ``with_structured_output`` with
``function_calling``, ``json_schema`` or ``json_mode``, ``ainvoke``/``abatch``), built for many calls in
flight: the request is one ``json.dumps`` and one POST, the answer one ``json.loads`` into an
``AIMessage`` with its tool calls, refusal and token usage. It makes no retries (the caller's policy
does, honouring Retry-After from :class:`~kecpm.llm.LLMHTTPError`), and it is async only: a
synchronous ``invoke`` runs the call on a private event loop.

>>> model = ChatCompletionsModel(model="gpt-4o-mini", base_url="https://api.openai.com/v1",
...                              api_key=SecretStr("sk-..."))  # doctest: +SKIP
>>> answer = await model.bind_tools([Knowledge], tool_choice="Knowledge").ainvoke(messages)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManager, AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.utils import convert_to_openai_messages
from langchain_core.output_parsers.openai_tools import make_invalid_tool_call, parse_tool_call
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda, ensure_config
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr

from ..aio import run_sync
from .errors import LLMCallError, LLMHTTPError
from .transport import HTTPPool

__all__ = ["ChatCompletionsModel"]

_RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}
_ROLES = {"system": "system", "human": "user", "ai": "assistant"}


class ChatCompletionsModel(BaseChatModel):
    """Chat completions over one keep-alive HTTP pool that this model owns (close it with :meth:`aclose`).

    ``max_tokens_param`` names the field the cap is sent in (``max_completion_tokens``, as OpenAI
    wants, or ``max_tokens`` for servers such as llama-cpp-python's). The key is a ``SecretStr``: it
    goes into the ``authorization`` header and nowhere else (not into a ``repr``, a trace or an error).
    """

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    model_name: str = Field(alias="model")
    base_url: str
    api_key: SecretStr | None = Field(default=None, exclude=True, repr=False)
    temperature: float | None = None
    max_tokens: int | None = None
    max_tokens_param: Literal["max_completion_tokens", "max_tokens"] = "max_completion_tokens"
    seed: int | None = None
    timeout: float = 120.0
    max_connections: int = 256
    extra_body: dict[str, Any] = Field(default_factory=dict, description="more fields sent with every request")

    _pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, HTTPPool] = PrivateAttr(
        default_factory=weakref.WeakKeyDictionary
    )

    @property
    def _llm_type(self) -> str:
        return "kecpm-chat-completions"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "temperature": self.temperature, "max_tokens": self.max_tokens}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        # The base class finds these with hasattr on pydantic fields, a measurable cost at every call.
        params = LangSmithParams(ls_provider="openai", ls_model_name=self.model_name, ls_model_type="chat")
        if (temperature := kwargs.get("temperature", self.temperature)) is not None:
            params["ls_temperature"] = temperature
        if (max_tokens := kwargs.get("max_tokens", self.max_tokens)) is not None:
            params["ls_max_tokens"] = max_tokens
        if stop:
            params["ls_stop"] = stop
        return params

    @property
    def pool(self) -> HTTPPool:
        """The HTTP pool of the running event loop, opened on first use: connections belong to the loop
        that opened them, so a model called from several loops (sync wrappers on private loops) keeps
        one pool per loop."""
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            # A pool whose loop has ended can do nothing more: dropped (its sockets close with it).
            for ended in [other for other in self._pools if other.is_closed()]:
                del self._pools[ended]
            headers = {}
            if self.api_key is not None:
                headers["authorization"] = f"Bearer {self.api_key.get_secret_value()}"
            pool = self._pools[loop] = HTTPPool(
                self.base_url, headers=headers, max_connections=self.max_connections, timeout=self.timeout
            )
        return pool

    async def aclose(self) -> None:
        """Close the pool of the running loop (a pool of another live loop is closed from that loop)."""
        current = asyncio.get_running_loop()
        for ended in [other for other in self._pools if other.is_closed()]:
            del self._pools[ended]
        if (pool := self._pools.pop(current, None)) is not None:
            await pool.aclose()

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        """``BaseChatModel.ainvoke``, straight to the endpoint when nothing would observe the call.

        With no callback handler (none passed, inherited, from tracing or from the environment, as
        LangChain itself decides), no LLM cache, no rate limiter and no v1 output conversion, the run
        machinery around ``_agenerate`` (run managers, a task per call, result wrappers) has nothing to
        do, yet it costs about a fifth of the client CPU of a call at 256 in flight. Otherwise: the base
        class, unchanged.
        """
        config = ensure_config(config)
        if not self._unobserved(config):
            return await super().ainvoke(input, config, stop=stop, **kwargs)
        kwargs.pop("ls_structured_output_format", None)
        kwargs.pop("structured_output_format", None)
        messages = self._convert_input(input).to_messages()
        result = await self._agenerate(messages, stop=stop, **kwargs)
        return result.generations[0].message  # type: ignore[return-value]

    def _unobserved(self, config: RunnableConfig) -> bool:
        if self.rate_limiter is not None or self.output_version == "v1":
            return False
        if self.cache is not False and (self.cache is not None or get_llm_cache() is not None):
            return False
        manager = AsyncCallbackManager.configure(
            config.get("callbacks"), self.callbacks, self.verbose, config.get("tags"), self.tags
        )
        return not manager.handlers

    # requests
    def _payload(self, messages: Sequence[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> bytes:
        body: dict[str, Any] = {"model": self.model_name, "messages": [_message_dict(m) for m in messages]}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body[self.max_tokens_param] = self.max_tokens
        if self.seed is not None:
            body["seed"] = self.seed
        if stop:
            body["stop"] = stop
        body.update(self.extra_body)
        body.update(kwargs)
        tools = body.pop("tools", None)
        text = json.dumps(body, ensure_ascii=False)
        if tools:
            encoded = tools.json if isinstance(tools, _EncodedTools) else json.dumps(tools, ensure_ascii=False)
            text = f'{text[:-1]}, "tools": {encoded}}}'
        return text.encode()

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        status, headers, body = await self.pool.post("/chat/completions", self._payload(messages, stop, kwargs))
        if status >= 300:
            raise _status_error(status, headers, body, self.base_url)
        try:
            answer = json.loads(body)
            choice = answer["choices"][0]
            message = choice["message"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LLMCallError(
                f"the answer of {self.base_url} is not a chat completion: {body[:200]!r}", kind="malformed_response"
            ) from exc
        return _chat_result(answer, choice, message, self.model_name)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # On a private loop, whose pool is closed with it.
        async def call() -> ChatResult:
            try:
                return await self._agenerate(messages, stop, None, **kwargs)
            finally:
                if (pool := self._pools.pop(asyncio.get_running_loop(), None)) is not None:
                    await pool.aclose()

        return run_sync(call())

    # tools and structured output
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Tools in OpenAI's function format; ``tool_choice`` a tool's name (forced), ``"auto"``,
        ``"none"``, ``"required"``/``"any"``, ``True`` (the only tool) or an OpenAI tool-choice dict."""
        formatted = _EncodedTools([convert_to_openai_tool(tool) for tool in tools])
        if tool_choice is not None and tool_choice is not False:
            kwargs["tool_choice"] = _tool_choice(tool_choice, formatted)
        return self.bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        method: Literal["function_calling", "json_schema", "json_mode"] = "function_calling",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """As ``ChatOpenAI.with_structured_output``: a function call, a JSON-schema answer or JSON mode,
        parsed into ``schema``; with ``include_raw`` a dict ``{"raw", "parsed", "parsing_error"}``."""
        if method == "function_calling":
            return super().with_structured_output(schema, include_raw=include_raw, **kwargs)
        from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser

        pydantic = isinstance(schema, type) and issubclass(schema, BaseModel)
        if method == "json_schema":
            if pydantic:
                name, json_schema = schema.__name__, schema.model_json_schema()  # type: ignore[union-attr]
            else:
                tool = convert_to_openai_tool(schema)["function"]
                name, json_schema = tool["name"], tool.get("parameters", {})
            spec: dict[str, Any] = {"name": name, "schema": json_schema}
            if strict is not None:
                spec["strict"] = strict
            response_format: dict[str, Any] = {"type": "json_schema", "json_schema": spec}
        else:
            response_format = {"type": "json_object"}
        bound = self.bind(response_format=response_format)
        parser = PydanticOutputParser(pydantic_object=schema) if pydantic else JsonOutputParser()  # type: ignore[arg-type]
        if not include_raw:
            return bound | parser

        async def parse(raw: AIMessage) -> dict[str, Any]:
            try:
                return {"raw": raw, "parsed": parser.invoke(raw), "parsing_error": None}
            except Exception as exc:  # the parser's errors, whatever the model answered
                return {"raw": raw, "parsed": None, "parsing_error": exc}

        return bound | RunnableLambda(parse, name="parse_structured")


class _EncodedTools(list):  # type: ignore[type-arg]
    """Tools as ``bind_tools`` formats them, with their JSON encoded once: the same tools go out with
    every call of a binding."""

    def __init__(self, tools: list[dict[str, Any]]) -> None:
        super().__init__(tools)
        self.json = json.dumps(tools, ensure_ascii=False)


def _tool_choice(choice: str | bool | dict[str, Any], tools: list[dict[str, Any]]) -> str | dict[str, Any]:
    if isinstance(choice, dict):
        return choice
    if choice is True:
        if len(tools) != 1:
            raise ValueError("tool_choice=True needs exactly one tool")
        choice = tools[0]["function"]["name"]
    if choice in ("auto", "none", "required"):
        return choice
    if choice == "any":
        return "required"
    return {"type": "function", "function": {"name": choice}}


def _message_dict(message: BaseMessage) -> dict[str, Any]:
    # The common case (text turns, as every prompt template renders them) without the general converter.
    role = _ROLES.get(message.type)
    if role is not None and isinstance(message.content, str) and not getattr(message, "tool_calls", None):
        return {"role": role, "content": message.content}
    return convert_to_openai_messages(message)  # type: ignore[return-value]


def _chat_result(answer: dict[str, Any], choice: dict[str, Any], message: dict[str, Any], model: str) -> ChatResult:
    tool_calls, invalid = [], []
    raw_calls = message.get("tool_calls") or []
    for raw in raw_calls:
        try:
            tool_calls.append(parse_tool_call(raw, return_id=True))
        except Exception as exc:  # arguments that are not JSON: kept as an invalid call, as ChatOpenAI does
            invalid.append(make_invalid_tool_call(raw, str(exc)))
    extra: dict[str, Any] = {}
    if raw_calls:
        extra["tool_calls"] = raw_calls
    if message.get("refusal"):
        extra["refusal"] = message["refusal"]
    finish = choice.get("finish_reason")
    metadata = {"finish_reason": finish, "model_name": answer.get("model", model), "model_provider": "openai"}
    if "id" in answer:
        metadata["id"] = answer["id"]
    usage = answer.get("usage") or {}
    ai = AIMessage(
        content=message.get("content") or "",
        additional_kwargs=extra,
        tool_calls=tool_calls,
        invalid_tool_calls=invalid,
        response_metadata=metadata,
        id=answer.get("id"),
        usage_metadata={
            "input_tokens": int(usage.get("prompt_tokens") or 0),
            "output_tokens": int(usage.get("completion_tokens") or 0),
            "total_tokens": int(usage.get("total_tokens") or 0),
        }
        if usage
        else None,
    )
    return ChatResult(
        generations=[ChatGeneration(message=ai, generation_info={"finish_reason": finish})],
        llm_output={"token_usage": usage, "model_name": metadata["model_name"]},
    )


def _status_error(status: int, headers: dict[str, str], body: bytes, url: str) -> LLMHTTPError:
    """The error of a non-2xx answer, with the server's message (never the request, which holds no key
    here anyway: the key is in a header)."""
    try:
        detail = json.loads(body)
        detail = detail.get("error", detail) if isinstance(detail, dict) else detail
        detail = detail.get("message", detail) if isinstance(detail, dict) else detail
    except ValueError:
        detail = body[:200].decode("utf-8", "replace")
    if status in (401, 403):
        kind = "auth"
    elif status == 429:
        kind = "rate_limit"
    elif status >= 500:
        kind = "server"
    else:
        kind = f"http_{status}"
    return LLMHTTPError(
        f"HTTP {status} from {url}: {str(detail)[:300]}",
        status=status,
        headers=headers,
        kind=kind,
        retryable=status in _RETRYABLE_STATUS,
    )
