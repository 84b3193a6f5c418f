"""The KECPM agent: an LLM that decides when to retrieve demonstrations, build knowledge and extract.

Use it inside workflows where a model plans (answering questions about posts, mixing kecpm with other
tools). For batch work, use ``kecpm.pipeline.KECPMPipeline`` itself: it runs the same three steps in a
fixed order, with no LLM deciding anything and no tokens spent on planning. The agent calls those steps
through :class:`PipelineSteps`, which the pipeline satisfies (the agent does not import the pipeline).

Post content is data: the tools take validated, bounded arguments; the extractor only ever sees text,
an image description and a list of short knowledge statements, whatever a post says.

>>> agent = create_kecpm_agent(chat_model, pipeline)  # doctest: +SKIP
>>> state = await agent.ainvoke({"messages": [("user", "Extract the relations: ...")]},
...                             {"recursion_limit": 12})  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import BaseModel, Field

from ..aio import run_sync
from ..predictions import PredictedQuintuple
from ..prompts import load_template
from ..records import Demonstration, Post, PostContent, PostText, Quintuple
from .schemas import KnowledgeResult, Statement

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.tools import StructuredTool

__all__ = [
    "AGENT_MODEL_CALL_LIMIT",
    "AGENT_RECURSION_LIMIT",
    "AGENT_TOOL_CALL_LIMIT",
    "AgentAnswer",
    "ExtractArgs",
    "KnowledgeArgs",
    "PipelineSteps",
    "RetrieveArgs",
    "create_kecpm_agent",
    "pipeline_tools",
]

# Three tools, a retry or two of each, and the answer; past these the middleware ends the run with what
# it has.
AGENT_MODEL_CALL_LIMIT = 8
AGENT_TOOL_CALL_LIMIT = 8
# A backstop behind those limits, never LangGraph's 10,000: each model call is 5 graph steps here
# (before_model, model, two after_model hooks, tools).
AGENT_RECURSION_LIMIT = 5 * AGENT_MODEL_CALL_LIMIT + 4
T = TypeVar("T")
_MAX_TEXT = 5000


class PipelineSteps(Protocol):
    """The steps the agent's tools call; ``kecpm.pipeline.KECPMPipeline`` is one."""

    @property
    def template_dirs(self) -> Sequence[Path]: ...

    async def aretrieve(self, post: Post) -> list[Demonstration]: ...

    def demonstrations_by_id(self, ids: Sequence[str]) -> list[Demonstration]: ...

    async def abuild_knowledge(self, post: Post, demonstrations: Sequence[Demonstration] = ()) -> KnowledgeResult: ...

    async def aextract(self, post: Post) -> list[Quintuple]: ...


class RetrieveArgs(PostText):
    """Arguments of ``retrieve_demonstrations``: the post, with the bounds a planning model must keep."""

    text: str = Field(min_length=1, max_length=_MAX_TEXT, description="the post's text, exactly as written")
    image_description: str = Field(default="", max_length=1000, description="what the post's image shows, if known")


class KnowledgeArgs(RetrieveArgs):
    """Arguments of ``build_knowledge``."""

    demonstration_ids: list[str] = Field(
        default_factory=list, max_length=8, description="ids returned by retrieve_demonstrations"
    )


class ExtractArgs(RetrieveArgs, PostContent):
    """Arguments of ``extract_quintuples``: the knowledge must be short factual statements."""

    # The bounds of the Knowledge schema (at most 6 statements of 3-200 characters): whatever a post
    # talks the planning model into, the extractor gets no more than build_knowledge can return.
    knowledge: list[Statement] = Field(
        default_factory=list, max_length=6, description="background knowledge statements from build_knowledge"
    )


class AgentAnswer(BaseModel):
    """The agent's final answer (its structured response): the quintuples found, and a one-line note."""

    quintuples: list[PredictedQuintuple] = Field(
        default_factory=list, description="the quintuples returned by extract_quintuples, unchanged"
    )
    note: str = Field(default="", max_length=500, description="one sentence on how they were found, if useful")


def pipeline_tools(pipeline: PipelineSteps) -> list[StructuredTool]:
    """The pipeline's three steps as LangChain tools with validated arguments, sync and async.

    Each returns ``content_and_artifact``: the model reads a JSON text, the caller gets the Python
    objects (demonstrations, the knowledge result, quintuples) as the ToolMessage's ``artifact``. The sync
    path runs on kecpm's private loop thread, so a sync ``agent.invoke`` works, in a notebook too.
    """
    from langchain_core.tools import StructuredTool

    async def retrieve_demonstrations(text: str, image_description: str = "") -> tuple[str, list[Demonstration]]:
        post = RetrieveArgs(text=text, image_description=image_description).to_post()
        found = await pipeline.aretrieve(post)
        content = {
            "demonstrations": [
                {"id": d.id, "text": d.text, "image_description": d.image_description, "answer": d.answer or ""}
                for d in found
            ]
        }
        return _json(content), found

    async def build_knowledge(
        text: str, image_description: str = "", demonstration_ids: list[str] | None = None
    ) -> tuple[str, KnowledgeResult]:
        args = KnowledgeArgs(text=text, image_description=image_description, demonstration_ids=demonstration_ids or [])
        # A sync Chroma read: off the loop.
        demonstrations = await asyncio.to_thread(pipeline.demonstrations_by_id, args.demonstration_ids)
        result = await pipeline.abuild_knowledge(args.to_post(), demonstrations)
        return _json({"knowledge": list(result.knowledge), "accepted": result.accepted}), result

    async def extract_quintuples(
        text: str, image_description: str = "", knowledge: list[str] | None = None
    ) -> tuple[str, list[PredictedQuintuple]]:
        args = ExtractArgs(text=text, image_description=image_description, knowledge=knowledge or [])
        quintuples = [PredictedQuintuple.from_quintuple(q) for q in await pipeline.aextract(args.to_post())]
        return _json({"quintuples": [q.model_dump(mode="json", exclude_none=True) for q in quintuples]}), quintuples

    specs = [
        (
            retrieve_demonstrations,
            RetrieveArgs,
            "Find annotated example posts similar to this post (their text, image description and "
            "answer). Call this first.",
        ),
        (
            build_knowledge,
            KnowledgeArgs,
            "Write background knowledge about the post's entities and their relations, checked "
            "and revised; pass the ids of the demonstrations retrieved.",
        ),
        (
            extract_quintuples,
            ExtractArgs,
            "Extract (head, head type, tail, tail type, relation) quintuples from the post, "
            "using its image description and the background knowledge.",
        ),
    ]
    return [
        StructuredTool.from_function(
            func=_sync(coroutine),
            coroutine=coroutine,
            name=coroutine.__name__,
            description=description,
            args_schema=schema,
            response_format="content_and_artifact",
        )
        for coroutine, schema, description in specs
    ]


def _sync(coroutine: Callable[..., Awaitable[T]]) -> Callable[..., T]:
    @functools.wraps(coroutine)
    def call(*args: Any, **kwargs: Any) -> T:
        return run_sync(coroutine(*args, **kwargs), persistent=True)

    return call


def _json(content: Any) -> str:
    return json.dumps(content, ensure_ascii=False)


def create_kecpm_agent(
    model: BaseChatModel | str,
    pipeline: PipelineSteps,
    *,
    system_prompt: str = "agent_system",
    extra_tools: list[Any] | None = None,
    response_format: Any = "default",
    model_call_limit: int | None = AGENT_MODEL_CALL_LIMIT,
    tool_call_limit: int | None = AGENT_TOOL_CALL_LIMIT,
    middleware: Sequence[Any] = (),
    **agent_options: Any,
) -> Any:
    """A LangChain v1 agent (``create_agent``) over the pipeline's tools, its system prompt a template file.

    Its final answer is an :class:`AgentAnswer` in ``state["structured_response"]``, through an explicit
    ``ToolStrategy`` (a native JSON-schema strategy depends on the provider: llama-cpp's server answers
    HTTP 500 to it); pass ``response_format=None`` for a free-text answer, or a strategy of your own.
    ``ModelCallLimitMiddleware`` and ``ToolCallLimitMiddleware`` end a run past ``model_call_limit``
    model calls or ``tool_call_limit`` tool calls (``None``: no limit). Run it with
    ``{"recursion_limit": AGENT_RECURSION_LIMIT}`` (or your own bound) in the config as well.
    """
    from langchain.agents import create_agent
    from langchain.agents.middleware import ModelCallLimitMiddleware, ToolCallLimitMiddleware
    from langchain.agents.structured_output import ToolStrategy

    template = load_template(system_prompt, search_dirs=pipeline.template_dirs)
    limits: list[Any] = []
    if tool_call_limit is not None:
        limits.append(ToolCallLimitMiddleware(run_limit=tool_call_limit, exit_behavior="end"))
    if model_call_limit is not None:
        limits.append(ModelCallLimitMiddleware(run_limit=model_call_limit, exit_behavior="end"))
    if response_format == "default":
        response_format = ToolStrategy(AgentAnswer)
    return create_agent(
        model,
        tools=[*pipeline_tools(pipeline), *(extra_tools or [])],
        system_prompt=template.format_text(),
        response_format=response_format,
        middleware=[*limits, *middleware],
        name="kecpm_agent",
        **agent_options,
    )
