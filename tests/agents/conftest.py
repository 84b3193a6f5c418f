"""Fixtures of the knowledge-agent tests: a scripted fake chat model and a loopback LLM server."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from pydantic import Field

from kecpm.agents import LoopbackServer


class ScriptedChatModel(FakeMessagesListChatModel):
    """Answers from a list, in order, and records every prompt it was sent (for prompt-assembly tests)."""

    seen: list[list[BaseMessage]] = Field(default_factory=list)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.seen.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


def _tool_answer(name: str, arguments: dict[str, Any] | str) -> AIMessage:
    """An AIMessage calling ``name``; a string argument is sent as is (to fake broken JSON)."""
    if isinstance(arguments, str):
        return AIMessage(
            content="",
            invalid_tool_calls=[{"name": name, "args": arguments, "id": "call_bad", "error": "bad json"}],
        )
    return AIMessage(
        content="",
        tool_calls=[{"name": name, "args": arguments, "id": f"call_{name}"}],
        usage_metadata={"input_tokens": 100, "output_tokens": len(json.dumps(arguments)) // 4, "total_tokens": 120},
    )


@pytest.fixture
def tool_answer():
    """``tool_answer(name, arguments)`` -> an AIMessage calling that function (a str: broken JSON)."""
    return _tool_answer


@pytest.fixture
def scripted():
    """A factory: ``scripted(answer, answer, ...)`` -> a ScriptedChatModel replaying them."""

    def make(*answers: AIMessage) -> ScriptedChatModel:
        return ScriptedChatModel(responses=list(answers), seen=[])

    return make


@pytest.fixture(scope="module")
def loopback() -> Iterator[LoopbackServer]:
    """A loopback OpenAI-compatible server in a thread, shared by a module's tests (reset per test)."""
    with LoopbackServer(latency=0.01, retry_after=0.2, hang=3.0) as server:
        yield server


@pytest.fixture
def server(loopback: LoopbackServer) -> LoopbackServer:
    loopback.configure(latency=0.01, faults={}, script=[], accept=False, api_key=None, retry_after=0.2, hang=3.0)
    loopback.reset()
    return loopback
