"""Fakes for tests of code built on kecpm: a chat model that replays answers and records its prompts,
and the tool-call answers it replays (the function calls the knowledge chain and the agent expect).

>>> from kecpm.testing import ScriptedChatModel, tool_answer
>>> model = ScriptedChatModel.replaying(tool_answer("Knowledge", {"statements": ["Ann is a singer."]}))
>>> chain = KnowledgeChain(model, rounds=0)  # doctest: +SKIP
>>> model.seen  # every prompt it was sent  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from pydantic import Field

__all__ = ["ScriptedChatModel", "tool_answer"]


class ScriptedChatModel(FakeMessagesListChatModel):
    """Answers from a list, in order, and records every prompt it was sent; binding tools is a no-op, so
    the answers decide which function is called."""

    seen: list[list[BaseMessage]] = Field(default_factory=list)

    @classmethod
    def replaying(cls, *answers: BaseMessage) -> ScriptedChatModel:
        return cls(responses=list(answers), seen=[])

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.seen.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


def tool_answer(name: str, arguments: dict[str, Any] | str, *, call_id: str | None = None) -> AIMessage:
    """An AIMessage calling function ``name`` with ``arguments`` (token usage included); a string is sent as
    is, as arguments that are not valid JSON."""
    call_id = call_id or f"call_{name}"
    if isinstance(arguments, str):
        return AIMessage(
            content="", invalid_tool_calls=[{"name": name, "args": arguments, "id": call_id, "error": "bad json"}]
        )
    return AIMessage(
        content="",
        tool_calls=[{"name": name, "args": arguments, "id": call_id}],
        usage_metadata={"input_tokens": 100, "output_tokens": len(json.dumps(arguments)) // 4, "total_tokens": 120},
    )
