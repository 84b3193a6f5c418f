"""The knowledge chain as a LangChain Runnable, with its settings as fields for ``configurable_fields``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.runnables import RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import patch_config
from pydantic import ConfigDict

from ..aio import run_sync
from .knowledge import KnowledgeChain
from .schemas import KnowledgeResult

__all__ = ["KnowledgeRunnable"]


class KnowledgeRunnable(RunnableSerializable[Mapping[str, Any], KnowledgeResult]):
    """A :class:`KnowledgeChain` as a LangChain Runnable: ``{"post", "demonstrations"}`` -> KnowledgeResult.

    ``rounds``, ``templates`` (merged over the chain's) and ``model`` override the chain's when set, so
    ``configurable_fields`` makes them per-call settings:

    >>> runnable = chain.as_runnable().configurable_fields(rounds=ConfigurableField(id="rounds"))  # doctest: +SKIP
    >>> await runnable.ainvoke({"post": post}, {"configurable": {"rounds": 0}})  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    chain: KnowledgeChain
    rounds: int | None = None
    templates: dict[str, str] | None = None
    model: Any = None
    name: str | None = "knowledge_chain"

    def _effective(self) -> KnowledgeChain:
        return self.chain.derive(rounds=self.rounds, templates=self.templates, model=self.model)

    async def ainvoke(
        self, input: Mapping[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> KnowledgeResult:
        return await self._acall_with_config(self._arun, input, config, run_type="chain", **kwargs)

    def invoke(self, input: Mapping[str, Any], config: RunnableConfig | None = None, **kwargs: Any) -> KnowledgeResult:
        """Synchronous; works inside a running event loop too (see :meth:`KnowledgeChain.invoke`)."""
        return run_sync(self.ainvoke(input, config, **kwargs), persistent=True)

    async def _arun(self, input: Mapping[str, Any], run_manager: Any, config: RunnableConfig) -> KnowledgeResult:
        child = patch_config(config, callbacks=run_manager.get_child())
        return await self._effective().ainvoke(input["post"], input.get("demonstrations", ()), child)
