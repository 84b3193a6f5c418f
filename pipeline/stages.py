"""The method's three stages, each built from a :class:`PipelineConfig` in one place: every path that runs
the method (``KECPMPipeline``, ``kecpm run``, ``kecpm knowledge build``, ``kecpm extract``, the
experiment runner) runs these objects, so a post gets the same demonstrations, the same prompts and the
same knowledge whichever way it comes in.

- :class:`RetrieveDemonstrations`: the demonstrations most similar to a post. A post without an image
  description is ranked by its text alone (the store's rule; counted here and logged).
- :func:`knowledge_builder`: generate -> critique -> revise for one post or many, every call cached.
- :class:`ExtractQuintuples`: the trained extractor's quintuples.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..agents import KnowledgeBuilder, SpendGuard
from ..errors import KecpmError
from ..records import Demonstration, Post, Quintuple
from .config import PipelineConfig

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from ..extractor import Extractor
    from ..llm import LLMConfig
    from ..retrieval import DemonstrationStore

__all__ = ["ExtractQuintuples", "RetrieveDemonstrations", "knowledge_builder"]

log = logging.getLogger(__name__)


class RetrieveDemonstrations:
    """Stage 1: a post -> the ``selection.k`` most similar demonstrations of the configured store (none
    without a store, or with ``k = 0``).

    The store opens on first use. ``text_only`` counts the posts retrieved without an image description
    (ranked by text alone), for the reports of batch runs.
    """

    def __init__(self, config: PipelineConfig, *, store: DemonstrationStore | None = None) -> None:
        self.config = config
        self._store = store
        self._lock = threading.Lock()
        self.text_only = 0

    def store(self) -> DemonstrationStore | None:
        """The demonstration store (opened now if it is not yet), or None when none is configured."""
        if self._store is None and self.config.store is not None:
            from ..retrieval import DemonstrationStore, StoreConfig

            with self._lock:
                if self._store is None:
                    self._store = DemonstrationStore(
                        StoreConfig.from_location(self.config.store, collection=self.config.collection),
                        selection=self.config.selection,
                    )
        return self._store

    async def __call__(self, post: Post, *, k: int | None = None) -> list[Demonstration]:
        """``k`` (default ``selection.k``) demonstrations for ``post``; the store opens in a worker thread."""
        store = self._store if self._store is not None else await asyncio.to_thread(self.store)
        if store is None:
            return []
        if not post.image_description:
            self.text_only += 1
            log.info("post %r has no image description: its demonstrations are ranked by text alone", post.id)
        return await store.aselect(post, k=k, selection=self.config.selection)

    def by_id(self, ids: Sequence[str]) -> list[Demonstration]:
        """Stored demonstrations by id (unknown ids are left out)."""
        store = self.store()
        return store.get(list(ids)) if store is not None and ids else []


def knowledge_builder(
    config: PipelineConfig,
    *,
    llm: LLMConfig | None = None,
    model: BaseChatModel | None = None,
    progress: bool = False,
    server_log: str | Path | None = None,
    spend: SpendGuard | None = None,
    cache: Any = None,
) -> KnowledgeBuilder:
    """Stage 2: the knowledge builder of ``config`` (its LLM, cache, rounds, retries, templates and
    posts in flight), not yet opened. ``llm`` replaces the configured LLM (an embedded server already
    running); ``model`` is any LangChain chat model with tool calling, used instead of an LLM config.
    ``spend`` is a guard shared with other builders; without one, ``config.budget`` (if set) holds.
    ``cache`` is an open cache used instead of ``config.knowledge_cache`` (a Ray cluster's shared one)."""
    return KnowledgeBuilder(
        None if model is not None else llm or config.llm,
        model=model,
        cache=cache if cache is not None else config.knowledge_cache,
        rounds=config.rounds,
        reflection=config.reflection,
        concurrency=config.workers,
        retry=config.retries,
        templates=config.templates,
        template_dirs=config.template_dirs,
        progress=progress,
        server_log=server_log,
        spend=spend or config.budget,
    )


class ExtractQuintuples:
    """Stage 3: posts (with their image description and knowledge) -> the extractor's quintuples.

    The extractor is the one given, else loaded from ``config.extractor`` on first use.
    """

    def __init__(self, config: PipelineConfig, *, extractor: Extractor | None = None) -> None:
        self.config = config
        self._extractor = extractor
        self._lock = threading.Lock()

    def extractor(self) -> Extractor:
        if self._extractor is None:
            if self.config.extractor is None:
                raise KecpmError(
                    "no extractor: set extractor = <model folder> in the pipeline config "
                    "(train one with `kecpm train` or `kecpm run`)"
                )
            from ..extractor import load_extractor

            with self._lock:
                if self._extractor is None:
                    self._extractor = load_extractor(self.config.extractor)
        return self._extractor

    async def __call__(self, posts: Sequence[Post], **options: Any) -> list[list[Quintuple]]:
        extractor = await asyncio.to_thread(self.extractor)
        return await extractor.apredict(list(posts), **options)

    def predict(self, posts: Sequence[Post], **options: Any) -> list[list[Quintuple]]:
        """Synchronous: for batch runs outside an event loop."""
        return self.extractor().predict(list(posts), **options)
