"""The KECPM pipeline: a post -> similar demonstrations -> knowledge -> quintuples, as one LangChain Runnable.

``KECPMPipeline`` is a ``Runnable``: ``invoke``, ``ainvoke``, ``batch``, ``abatch``, ``astream``,
``astream_events`` and ``|`` composition all work, and the sync ones work inside a running event loop
(a notebook). Its three steps are child runs named ``retrieve``, ``knowledge`` and ``extract``; the
knowledge step's LLM stages are runs named ``generate``, ``critique`` and ``revise`` below it, with the
post id, template ref and cache hit in their metadata. ``astream`` yields the demonstrations, then the
knowledge, then the quintuples, as each is ready. The configurable keys ``k``, ``rounds``,
``templates`` and ``model`` change one call (``{"configurable": {"rounds": 0}}``). It is built from a
:class:`PipelineConfig`, and its steps are the stage objects of :mod:`kecpm.pipeline.stages`, the ones
every batch path runs too.

>>> pipeline = KECPMPipeline(PipelineConfig(store="runs/demo/store", extractor="runs/demo/model"))  # doctest: +SKIP
>>> post = {"text": "Alva Brenner signs with Oakline FC", "image_description": "a man holding a scarf"}
>>> result = await pipeline.ainvoke(post)  # doctest: +SKIP
>>> result.quintuples[0].relation  # doctest: +SKIP
'member_of'
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.runnables.config import ensure_config, patch_config
from langchain_core.runnables.utils import AddableDict, ConfigurableFieldSpec
from pydantic import BaseModel, Field

from ..agents import ImageError, KnowledgeBuilder, KnowledgeChain, KnowledgeResult, Usage, describe_image
from ..aio import LoopThread, run_sync
from ..errors import KecpmError
from ..predictions import PredictedQuintuple
from ..records import Demonstration, Post, PostInput, Quintuple
from .config import PipelineConfig
from .stages import ExtractQuintuples, RetrieveDemonstrations, knowledge_builder

if TYPE_CHECKING:
    from langchain_core.callbacks import AsyncCallbackManagerForChainRun
    from langchain_core.language_models import BaseChatModel

    from ..extractor import Extractor
    from ..llm import EmbeddedServer, LLMConfig
    from ..retrieval import DemonstrationStore

__all__ = ["CONFIGURABLE", "ImageDescriptionRequired", "KECPMPipeline", "PipelineResult", "as_post"]

log = logging.getLogger(__name__)

CONFIGURABLE: dict[str, str] = {
    "k": "demonstrations retrieved per post",
    "rounds": "critique/revise rounds of the knowledge chain",
    "templates": "template refs per stage, e.g. {'generate': 'generate@v2'}",
    "model": "a LangChain chat model to build the knowledge with",
}
"""The per-call settings of ``config["configurable"]`` that the pipeline reads."""


class ImageDescriptionRequired(KecpmError, ValueError):
    """A post has an image but no description, and no vision model is configured to describe it."""


class PipelineResult(BaseModel):
    """What the pipeline found for one post, and how it got there."""

    post_id: str
    text: str
    image_description: str = ""
    quintuples: list[PredictedQuintuple]
    knowledge: KnowledgeResult | None = Field(description="the final knowledge and its critique/revise trajectory")
    demonstrations: list[Demonstration] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict, description="seconds per step")
    usage: Usage = Field(default_factory=Usage, description="LLM calls and tokens spent on this post")


PipelineInputLike = PostInput | Post | Mapping[str, Any] | str


def as_post(value: PipelineInputLike) -> tuple[Post, bytes | None]:
    """The Post of any accepted input form, with image bytes when they were given inline."""
    if isinstance(value, Post):
        return value, None
    if isinstance(value, str):
        value = PostInput(text=value)
    elif isinstance(value, Mapping):
        value = PostInput.model_validate(dict(value))
    if not isinstance(value, PostInput):
        raise TypeError(f"the pipeline takes a PostInput, a Post, a dict or a str, not {type(value).__name__}")
    return value.to_post(), value.image_bytes


class KECPMPipeline(Runnable[PipelineInputLike, PipelineResult]):
    """post -> demonstrations -> knowledge -> quintuples.

    The store, the extractor and the LLM come from ``config`` unless given ready-made (``store``,
    ``extractor``, ``model``: any LangChain chat model with tool calling). Resources open on first use;
    ``aclose()`` / ``close()`` (or ``async with`` / ``with``) release them. The object may be used from
    several event loops (and from sync code): each loop gets its own LLM client, all share the cache.
    """

    name: str | None = "kecpm_pipeline"

    def __init__(
        self,
        config: PipelineConfig | None = None,
        *,
        store: DemonstrationStore | None = None,
        extractor: Extractor | None = None,
        model: BaseChatModel | None = None,
    ) -> None:
        self.config = config or PipelineConfig()
        self.retrieval = RetrieveDemonstrations(self.config, store=store)
        self.extraction = ExtractQuintuples(self.config, extractor=extractor)
        self._model = model
        self._server: EmbeddedServer | None = None
        self._builders: dict[asyncio.AbstractEventLoop, KnowledgeBuilder] = {}
        # One builder per loop even when concurrent calls (abatch) ask for it at once.
        self._builder_locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}
        self._lock = threading.Lock()
        self._loop_thread = LoopThread("kecpm-pipeline")
        self._steps = (
            RunnableLambda(self._retrieve, name="retrieve")
            | RunnableLambda(self._build_knowledge, name="knowledge")
            | RunnableLambda(self._extract, name="extract")
        )

    # -- Runnable --------------------------------------------------------------------------------
    @property
    def InputType(self) -> type:
        return PostInput

    @property
    def OutputType(self) -> type:
        return PipelineResult

    async def ainvoke(
        self, input: PipelineInputLike, config: RunnableConfig | None = None, **kwargs: Any
    ) -> PipelineResult:
        return await self._acall_with_config(self._arun, input, config, run_type="chain", **kwargs)

    def invoke(self, input: PipelineInputLike, config: RunnableConfig | None = None, **kwargs: Any) -> PipelineResult:
        """Synchronous: runs on the pipeline's own event loop thread, so it works inside or outside a loop."""
        return self._loop_thread.run(self.ainvoke(input, config, **kwargs))

    def stream(
        self, input: PipelineInputLike, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[AddableDict]:
        """Synchronous :meth:`astream` (the chunks arrive once the post is done)."""

        async def collect() -> list[AddableDict]:
            return [chunk async for chunk in self.astream(input, config, **kwargs)]

        yield from self._loop_thread.run(collect())

    async def astream(
        self, input: PipelineInputLike, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[AddableDict]:
        """``{"demonstrations": [...]}``, then ``{"knowledge": KnowledgeResult}``, then
        ``{"quintuples": [...], "result": PipelineResult}``, each as soon as its step is done.

        The chunks are ``AddableDict``: summed, they are one dict of all three, so ``|`` composition
        and ``astream`` of a sequence work.
        """
        chunks: asyncio.Queue[AddableDict | None] = asyncio.Queue()
        config = ensure_config(config)
        # A "__" key: LangChain keeps it out of run metadata.
        config["configurable"] = {**config.get("configurable", {}), "__kecpm_emit": chunks.put_nowait}
        task = asyncio.create_task(self.ainvoke(input, config, **kwargs))
        task.add_done_callback(lambda _: chunks.put_nowait(None))
        try:
            while (chunk := await chunks.get()) is not None:
                yield chunk
            await task  # its error, if any
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        return [
            ConfigurableFieldSpec(id=key, annotation=Any, name=key, description=text, default=None)
            for key, text in CONFIGURABLE.items()
        ]

    async def _arun(
        self, input: PipelineInputLike, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
    ) -> PipelineResult:
        post, image_bytes = as_post(input)
        configurable = dict(config.get("configurable") or {})
        state = {
            "post": post,
            "image_bytes": image_bytes,
            "timings": {},
            "configurable": configurable,
            "emit": configurable.pop("__kecpm_emit", None),
        }
        child = patch_config(config, callbacks=run_manager.get_child())
        # The post id on every run below this one (retrieve, generate, critique, revise, extract).
        child["metadata"] = {**child.get("metadata", {}), "post_id": post.id}
        return await self._steps.ainvoke(state, child)

    # -- the three steps, also callable alone (the agent's tools use them) -------------------------
    @property
    def template_dirs(self) -> Sequence[Path]:
        """Where templates are looked up first (the agent's system prompt too)."""
        return self.config.template_dirs

    async def aprepare(self, input: PipelineInputLike) -> Post:
        """The Post of any accepted input, its image described when it has none (see ``as_post``)."""
        post, image_bytes = as_post(input)
        return await self._describe_image(post, image_bytes)

    def run_blocking(self, coro: Any) -> Any:
        """Run a coroutine of this pipeline from sync code, on the pipeline's own loop thread (where its
        LLM clients live), inside a running event loop too."""
        return self._loop_thread.run(coro)

    async def aretrieve(self, post: Post) -> list[Demonstration]:
        """The demonstrations most similar to ``post`` (none when no store is configured; ranked by
        text alone when the post has no image description)."""
        return await self.retrieval(post)

    def demonstrations_by_id(self, ids: Sequence[str]) -> list[Demonstration]:
        """Stored demonstrations by id (unknown ids are left out)."""
        return self.retrieval.by_id(ids)

    async def abuild_knowledge(self, post: Post, demonstrations: Sequence[Demonstration] = ()) -> KnowledgeResult:
        """generate -> critique -> revise for ``post``; every LLM call goes through the cache."""
        builder = await self._builder()
        return await builder.ainvoke(post, demonstrations)

    async def aextract(self, post: Post) -> list[Quintuple]:
        """The extractor's quintuples for ``post`` (its knowledge and image description included)."""
        (quintuples,) = await self.extraction([post])
        return quintuples

    async def _retrieve(self, state: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        post: Post = await self._describe_image(state["post"], state.pop("image_bytes"))
        k = state["configurable"].get("k")
        demonstrations = await self.retrieval(post, k=k) if k is not None else await self.aretrieve(post)
        state["timings"]["retrieve_demonstrations"] = time.perf_counter() - started
        _emit(state, demonstrations=demonstrations)
        return {**state, "post": post, "demonstrations": demonstrations}

    async def _build_knowledge(self, state: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        builder = await self._builder()
        chain = _configured_chain(builder, state["configurable"])
        result = await chain.ainvoke(state["post"], state["demonstrations"])
        state["timings"]["build_knowledge"] = time.perf_counter() - started
        _emit(state, knowledge=result)
        return {**state, "knowledge": result}

    async def _extract(self, state: dict[str, Any]) -> PipelineResult:
        started = time.perf_counter()
        post: Post = state["post"]
        knowledge: KnowledgeResult = state["knowledge"]
        quintuples = await self.aextract(post.model_copy(update={"knowledge": list(knowledge.knowledge)}))
        state["timings"]["extract_quintuples"] = time.perf_counter() - started
        result = PipelineResult(
            post_id=post.id,
            text=post.text,
            image_description=post.image_description,
            quintuples=[PredictedQuintuple.from_quintuple(q) for q in quintuples],
            knowledge=knowledge,
            demonstrations=state["demonstrations"],
            timings=state["timings"],
            usage=knowledge.usage,
        )
        _emit(state, quintuples=result.quintuples, result=result)
        return result

    async def _describe_image(self, post: Post, image_bytes: bytes | None) -> Post:
        if post.image_descriptions or (post.image_path is None and image_bytes is None):
            return post
        if not self.config.llm.vision and self._model is None:
            raise ImageDescriptionRequired(
                f"post {post.id!r} has an image but no description: pass image_description, or configure a "
                "vision-capable endpoint (llm.base_url with llm.vision = true). kecpm has no offline captioning "
                "model: no PyPI package ships captioning or vision-language weights."
            )
        builder = await self._builder()
        try:
            description = await describe_image(
                builder, image_path=post.image_path, image_bytes=image_bytes, template=self.config.describe_template
            )
        except ImageError as exc:
            raise ImageDescriptionRequired(f"post {post.id!r}: {exc}") from None
        return post.model_copy(update={"image_descriptions": [description]})

    # -- resources ---------------------------------------------------------------------------------
    async def _builder(self) -> KnowledgeBuilder:
        """The knowledge builder of the running loop (LLM clients are bound to the loop that made them)."""
        loop = asyncio.get_running_loop()
        builder = self._builders.get(loop)
        if builder is not None:
            return builder
        async with self._builder_locks.setdefault(loop, asyncio.Lock()):
            builder = self._builders.get(loop)
            if builder is None:
                llm = None
                if self._model is None and self.config.llm.embedded:
                    llm = await asyncio.to_thread(self._embedded_config)
                builder = knowledge_builder(self.config, llm=llm, model=self._model)
                await builder.open()
                self._builders[loop] = builder
        return builder

    def _embedded_config(self) -> LLMConfig:
        """One embedded LLM server per pipeline, shared by every loop's client."""
        from ..llm import EmbeddedServer

        with self._lock:
            if self._server is None:
                self._server = EmbeddedServer().start()
            return self._server.config(
                **self.config.llm.model_dump(exclude={"base_url", "api_key", "max_tokens_param"})
            )

    async def aclose(self) -> None:
        """Close every knowledge builder (LLM clients and caches, those of stopped loops too) and stop the
        embedded server."""
        loop = asyncio.get_running_loop()
        for owner, builder in list(self._builders.items()):
            try:
                if owner is not loop and owner.is_running():
                    await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(builder.aclose(), owner))
                else:
                    # This loop's builder, or one whose loop has stopped: closed here (its cache, server
                    # and whatever of its HTTP client can still be closed).
                    await builder.aclose()
            except Exception as exc:  # one builder that fails to close must not keep the rest open
                log.warning("closing the knowledge builder of a loop failed: %s", exc)
            finally:
                del self._builders[owner]
                self._builder_locks.pop(owner, None)
        if self._server is not None:
            server, self._server = self._server, None
            await asyncio.to_thread(server.stop)

    def close(self) -> None:
        """Synchronous :meth:`aclose` (inside a running loop too); also stops the pipeline's loop thread."""
        if self._loop_thread.running:
            self._loop_thread.run(self.aclose())
        else:
            run_sync(self.aclose())
        self._loop_thread.stop()

    async def __aenter__(self) -> KECPMPipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __enter__(self) -> KECPMPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _emit(state: Mapping[str, Any], **chunk: Any) -> None:
    emit: Callable[[AddableDict], None] | None = state.get("emit")
    if emit is not None:
        emit(AddableDict(chunk))


def _configured_chain(builder: KnowledgeBuilder, configurable: Mapping[str, Any]) -> KnowledgeChain:
    """The builder's chain, or its variant for this call's ``rounds`` / ``templates`` / ``model``."""
    chain = builder.chain
    assert chain is not None, "the builder is open"
    return chain.derive(
        rounds=configurable.get("rounds"), templates=configurable.get("templates"), model=configurable.get("model")
    )
