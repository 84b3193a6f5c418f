"""The method as a LangGraph ``StateGraph``: one node per stage (retrieve -> knowledge -> extract), each
with its retry policy, compiled with a checkpointer, so a graph that stops (an interrupt, a crash, a
node that failed for good) resumes at the node where it stopped, without redoing the nodes before it.

The state holds JSON-ready values only (a post, demonstrations, the knowledge result and the quintuples
as plain dicts): any checkpointer stores them, and nothing but data is ever deserialised.

>>> graph = build_graph(pipeline, interrupt_after=["knowledge"])  # doctest: +SKIP
>>> thread = {"configurable": {"thread_id": "post-1"}}
>>> await graph.ainvoke({"post": {"text": "...", "image_description": "..."}}, thread)  # doctest: +SKIP
>>> await graph.ainvoke(None, thread)  # resumes at extract: no new LLM call  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from ..agents import KnowledgeResult
from ..llm import LLMCallError
from ..predictions import PredictedQuintuple
from ..records import Demonstration, Post
from ..retrieval import StoreUnavailableError

if TYPE_CHECKING:
    from langgraph.graph import StateGraph
    from langgraph.types import RetryPolicy

    from .runnable import KECPMPipeline

__all__ = ["NODES", "PipelineState", "build_graph", "default_retry_policies", "graph_builder", "sqlite_checkpointer"]

NODES = ("retrieve", "knowledge", "extract")


class PipelineState(TypedDict, total=False):
    """The graph's state; give ``post`` (a dict of PostInput's fields, a Post's JSON, or a text)."""

    post: Any
    demonstrations: list[dict[str, Any]]
    knowledge: dict[str, Any]
    quintuples: list[dict[str, Any]]


def transient(error: BaseException) -> bool:
    """Whether a node's error may pass on a retry: an unreachable store, a retryable LLM failure, a timeout."""
    if isinstance(error, LLMCallError):
        return error.retryable
    return isinstance(error, StoreUnavailableError | ConnectionError | TimeoutError)


def default_retry_policies() -> dict[str, RetryPolicy]:
    """Per node: retrieve and knowledge retried on transient errors (the chain has already retried each
    LLM call, so the knowledge node tries twice at most); extract, a local model, once."""
    from langgraph.types import RetryPolicy

    return {
        "retrieve": RetryPolicy(max_attempts=3, initial_interval=0.5, retry_on=transient),
        "knowledge": RetryPolicy(max_attempts=2, initial_interval=1.0, retry_on=transient),
        "extract": RetryPolicy(max_attempts=1),
    }


def graph_builder(
    pipeline: KECPMPipeline,
    *,
    retry: Mapping[str, RetryPolicy] | None = None,
    state_schema: type = PipelineState,
    finish: bool = True,
) -> StateGraph:
    """The uncompiled ``StateGraph``: add nodes or edges of your own, then ``compile``.

    ``state_schema`` may extend :class:`PipelineState` with keys of your nodes; ``finish=False`` leaves
    the edge out of ``extract`` so that your own nodes follow it.
    """
    from langchain_core.runnables import RunnableLambda
    from langgraph.graph import END, START, StateGraph

    async def retrieve(state: PipelineState) -> PipelineState:
        post = await pipeline.aprepare(_post_input(state["post"]))
        demonstrations = await pipeline.aretrieve(post)
        return {"post": post.model_dump(mode="json"), "demonstrations": _dump(demonstrations)}

    async def knowledge(state: PipelineState) -> PipelineState:
        post = Post.model_validate(state["post"])
        demonstrations = [Demonstration.model_validate(d) for d in state.get("demonstrations", [])]
        result = await pipeline.abuild_knowledge(post, demonstrations)
        return {"knowledge": result.model_dump(mode="json")}

    async def extract(state: PipelineState) -> PipelineState:
        post = Post.model_validate(state["post"])
        found = KnowledgeResult.model_validate(state["knowledge"]) if state.get("knowledge") else None
        if found is not None:
            post = post.model_copy(update={"knowledge": list(found.knowledge)})
        quintuples = [PredictedQuintuple.from_quintuple(q) for q in await pipeline.aextract(post)]
        return {"quintuples": _dump(quintuples)}

    policies = {**default_retry_policies(), **(retry or {})}
    graph = StateGraph(state_schema)
    for name, node in (("retrieve", retrieve), ("knowledge", knowledge), ("extract", extract)):
        graph.add_node(
            name, RunnableLambda(_blocking(pipeline, node), afunc=node, name=name), retry_policy=policies[name]
        )
    graph.add_edge(START, "retrieve")
    graph.add_edge("retrieve", "knowledge")
    graph.add_edge("knowledge", "extract")
    if finish:
        graph.add_edge("extract", END)
    return graph


def build_graph(
    pipeline: KECPMPipeline,
    *,
    checkpointer: Any = None,
    retry: Mapping[str, RetryPolicy] | None = None,
    interrupt_before: Sequence[str] | None = None,
    interrupt_after: Sequence[str] | None = None,
    name: str = "kecpm_graph",
) -> Any:
    """The compiled graph over ``pipeline``'s stages, with ``checkpointer`` (default: an ``InMemorySaver``;
    ``False`` for none; any LangGraph checkpointer, e.g. :func:`sqlite_checkpointer`). Run it with a
    ``thread_id`` in ``config["configurable"]``; ``ainvoke(None, same config)`` resumes that thread."""
    if checkpointer is None:
        from langgraph.checkpoint.memory import InMemorySaver

        checkpointer = InMemorySaver()
    return graph_builder(pipeline, retry=retry).compile(
        checkpointer=checkpointer or None,
        interrupt_before=list(interrupt_before or []) or None,
        interrupt_after=list(interrupt_after or []) or None,
        name=name,
    )


def sqlite_checkpointer(path: str | Path) -> Any:
    """A checkpointer in a SQLite file that outlives the process, for sync graph runs (``invoke``).

    Needs the ``langgraph-checkpoint-sqlite`` package (not a kecpm dependency); for async runs use its
    ``AsyncSqliteSaver`` the same way.
    """
    import sqlite3

    try:
        from langgraph.checkpoint.sqlite import SqliteSaver
    except ImportError as exc:
        raise ImportError(
            "a SQLite checkpointer needs `pip install langgraph-checkpoint-sqlite`; without it, "
            "build_graph uses an InMemorySaver"
        ) from exc
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return SqliteSaver(sqlite3.connect(str(path), check_same_thread=False))


def _post_input(value: Any) -> Any:
    """A post as given, or a Post's JSON from a checkpoint (it has an id and the dataset's fields)."""
    if isinstance(value, Mapping) and "id" in value and "image_descriptions" in value:
        return Post.model_validate(dict(value))
    return value


def _dump(items: Sequence[Any]) -> list[dict[str, Any]]:
    return [item.model_dump(mode="json", exclude_none=True) for item in items]


def _blocking(
    pipeline: KECPMPipeline, node: Callable[[PipelineState], Awaitable[PipelineState]]
) -> Callable[[PipelineState], PipelineState]:
    """A sync twin of a node (for ``graph.invoke``), run on the pipeline's own loop thread."""

    def run(state: PipelineState) -> PipelineState:
        return pipeline.run_blocking(node(state))

    return run
