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

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import Field

from ..predictions import PredictedQuintuple
from ..prompts import load_template
from ..records import Demonstration, Post, PostContent, PostText, Quintuple
from .schemas import KnowledgeResult, Statement

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.tools import StructuredTool

__all__ = [
    "AGENT_RECURSION_LIMIT",
    "ExtractArgs",
    "KnowledgeArgs",
    "PipelineSteps",
    "RetrieveArgs",
    "create_kecpm_agent",
    "pipeline_tools",
]

# Three tool calls and an answer need 8 graph steps; a little room, but never LangGraph's 10,000.
AGENT_RECURSION_LIMIT = 16
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


def pipeline_tools(pipeline: PipelineSteps) -> list[StructuredTool]:
    """The pipeline's three steps as async LangChain tools with validated arguments."""
    from langchain_core.tools import StructuredTool

    async def retrieve_demonstrations(text: str, image_description: str = "") -> dict[str, Any]:
        post = RetrieveArgs(text=text, image_description=image_description).to_post()
        found = await pipeline.aretrieve(post)
        return {
            "demonstrations": [
                {"id": d.id, "text": d.text, "image_description": d.image_description, "answer": d.answer or ""}
                for d in found
            ]
        }

    async def build_knowledge(
        text: str, image_description: str = "", demonstration_ids: list[str] | None = None
    ) -> dict[str, Any]:
        args = KnowledgeArgs(text=text, image_description=image_description, demonstration_ids=demonstration_ids or [])
        demonstrations = pipeline.demonstrations_by_id(args.demonstration_ids)
        result = await pipeline.abuild_knowledge(args.to_post(), demonstrations)
        return {"knowledge": list(result.knowledge), "accepted": result.accepted}

    async def extract_quintuples(
        text: str, image_description: str = "", knowledge: list[str] | None = None
    ) -> dict[str, Any]:
        args = ExtractArgs(text=text, image_description=image_description, knowledge=knowledge or [])
        quintuples = await pipeline.aextract(args.to_post())
        return {
            "quintuples": [
                PredictedQuintuple.from_quintuple(q).model_dump(mode="json", exclude_none=True) for q in quintuples
            ]
        }

    return [
        StructuredTool.from_function(
            coroutine=retrieve_demonstrations,
            name="retrieve_demonstrations",
            description="Find annotated example posts similar to this post (their text, image description and "
            "answer). Call this first.",
            args_schema=RetrieveArgs,
        ),
        StructuredTool.from_function(
            coroutine=build_knowledge,
            name="build_knowledge",
            description="Write background knowledge about the post's entities and their relations, checked "
            "and revised; pass the ids of the demonstrations retrieved.",
            args_schema=KnowledgeArgs,
        ),
        StructuredTool.from_function(
            coroutine=extract_quintuples,
            name="extract_quintuples",
            description="Extract (head, head type, tail, tail type, relation) quintuples from the post, "
            "using its image description and the background knowledge.",
            args_schema=ExtractArgs,
        ),
    ]


def create_kecpm_agent(
    model: BaseChatModel | str,
    pipeline: PipelineSteps,
    *,
    system_prompt: str = "agent_system",
    extra_tools: list[Any] | None = None,
    **agent_options: Any,
) -> Any:
    """A LangChain v1 agent (``create_agent``) over the pipeline's tools, its system prompt a template file.

    Run it with ``{"recursion_limit": AGENT_RECURSION_LIMIT}`` (or your own bound) in the config.
    """
    from langchain.agents import create_agent

    template = load_template(system_prompt, search_dirs=pipeline.template_dirs)
    return create_agent(
        model,
        tools=[*pipeline_tools(pipeline), *(extra_tools or [])],
        system_prompt=template.format_text(),
        name="kecpm_agent",
        **agent_options,
    )
