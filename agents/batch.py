"""Knowledge for many posts: a bounded pool of workers, results streamed as they finish, failures kept.

>>> async with KnowledgeBuilder(LLMConfig.from_env(), cache="out/knowledge.sqlite") as builder:  # doctest: +SKIP
...     async for item in builder.astream(posts, demonstrations=store_select):
...         print(item.post_id)
...     report = await builder.abuild(posts, demonstrations=store_select)  # 0 calls now: all cached

With no ``base_url`` the builder starts the embedded SmolLM2 server and stops it on exit.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..aio import run_sync
from ..llm import ChatClient, EmbeddedServer, LLMCallError, LLMConfig, classify_error
from ..records import Demonstration, Post
from .cache import KnowledgeCache
from .knowledge import KnowledgeChain
from .schemas import BuildReport, KnowledgeFailure, KnowledgeResult, Reflection, SpendLimit, Usage
from .spend import CacheHistory, DryRunCache, SpendEstimate, SpendEstimator, SpendGuard, counter_for

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from tenacity import AsyncRetrying

__all__ = ["DemonstrationSource", "KnowledgeBuilder"]

DemonstrationSource = (
    Mapping[str, Sequence[Demonstration]]
    | Callable[[Post], Awaitable[Sequence[Demonstration]] | Sequence[Demonstration]]
    | None
)
"""Demonstrations per post: a mapping by post id, or a function of the post (such as a store's ``aselect``)."""

_DONE = object()
log = logging.getLogger(__name__)


class _Crash:
    def __init__(self, error: Exception) -> None:
        self.error = error


class KnowledgeBuilder:
    """Builds knowledge for posts with one LLM client, one cache and a bounded number of posts in flight.

    Give ``llm`` (an :class:`LLMConfig`; its ``base_url=None`` starts the embedded server) or ``model``
    (any LangChain chat model with tool calling, used as is). ``cache`` is a path or an open
    :class:`KnowledgeCache`; without one nothing persists. The other options go to
    :class:`KnowledgeChain`. Use ``async with``: it opens and closes the client, server and cache.

    ``spend`` is a budget (a :class:`SpendLimit`, or a :class:`~kecpm.agents.spend.SpendGuard` shared with
    other builders) that the build never crosses: it stops before the request that could, and
    :attr:`BuildReport.left` lists the posts it did not reach. :meth:`aestimate` says what a build would
    cost without sending anything (it needs no ``async with``).
    """

    def __init__(
        self,
        llm: LLMConfig | None = None,
        *,
        model: BaseChatModel | None = None,
        cache: str | Path | KnowledgeCache | None = None,
        rounds: int = 1,
        reflection: Reflection = "revise",
        concurrency: int = 8,
        retry: int | AsyncRetrying = 4,
        reasks: int = 1,
        templates: Mapping[str, str] | None = None,
        template_dirs: Sequence[str | Path] | None = None,
        progress: bool = True,
        server_log: str | Path | None = None,
        spend: SpendLimit | SpendGuard | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.llm = llm if llm is not None or model is not None else LLMConfig.from_env()
        self._model = model
        self._cache_arg = cache
        self.concurrency = concurrency
        self.progress = progress
        self._chain_options: dict[str, Any] = {
            "rounds": rounds,
            "reflection": reflection,
            "retry": retry,
            "reasks": reasks,
            "templates": templates,
            "template_dirs": template_dirs,
        }
        self._server_log = server_log
        self._spend = spend
        self.spend: SpendGuard | None = spend if isinstance(spend, SpendGuard) else None
        self._server: EmbeddedServer | None = None
        self._client: ChatClient | None = None
        self.cache: KnowledgeCache | None = None
        self.chain: KnowledgeChain | None = None

    async def __aenter__(self) -> KnowledgeBuilder:
        try:
            await self.open()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        if isinstance(self._cache_arg, str | Path):
            self.cache = await asyncio.to_thread(KnowledgeCache, self._cache_arg)
        else:  # an open cache: a KnowledgeCache, or one with its methods (the Ray cluster's shared cache)
            self.cache = self._cache_arg
        url = None
        if self._model is None and self.llm is not None and self.llm.embedded:
            self._server = EmbeddedServer(log_path=self._server_log)
            await self._server.__aenter__()
            url = self._server.base_url
        # In a thread: the first client imports openai and langchain-openai (seconds on a busy machine).
        model, options = await asyncio.to_thread(self._model_and_options, url)
        if isinstance(self._spend, SpendLimit):
            self.spend = (
                SpendGuard.for_llm(self._spend, self.llm)
                if self._model is None and self.llm is not None
                else SpendGuard(self._spend, max_output_tokens=self._max_output_tokens(model))
            )
        self.chain = KnowledgeChain(model, cache=self.cache, spend=self.spend, **options)

    def _model_and_options(self, url: str | None) -> tuple[BaseChatModel, dict[str, Any]]:
        """The chat model (a client of ``url`` or the configured endpoint) and the chain's options."""
        options = dict(self._chain_options)
        if self._model is not None:
            return self._model, options
        config = self.llm
        assert config is not None
        if config.embedded:
            config = config.model_copy(update={"max_tokens_param": "max_tokens"})
        self._client = ChatClient(config, base_url=url, max_connections=max(self.concurrency * 2, 16))
        options.update(
            structured_method=config.structured_method,
            model_name=config.model,
            params=config.call_params(),
            vision=config.vision,
            prices=(config.input_price, config.output_price),
        )
        return self._client.model, options

    def _max_output_tokens(self, model: BaseChatModel) -> int:
        cap = (
            self.llm.max_tokens if self._model is None and self.llm is not None else getattr(model, "max_tokens", None)
        )
        if not cap:
            raise ValueError("a budget needs a cap on answers: give the chat model max_tokens")
        return int(cap)

    async def aestimate(
        self,
        posts: Iterable[Post] | AsyncIterable[Post],
        demonstrations: DemonstrationSource = None,
        *,
        into: SpendEstimator | None = None,
    ) -> SpendEstimate:
        """What :meth:`abuild` would send for ``posts``, sending nothing: calls, tokens and cost per stage
        (see :mod:`kecpm.agents.spend`). The cache is only read; no server is started. ``into`` adds these
        posts to another estimate (an experiment's runs), counting calls they share once."""
        cache = self.cache
        opened = None
        if cache is None and isinstance(self._cache_arg, str | Path) and Path(self._cache_arg).exists():
            cache = opened = KnowledgeCache(self._cache_arg)
        elif cache is None and isinstance(self._cache_arg, KnowledgeCache):
            cache = self._cache_arg
        # Never contacted: the request bodies are rendered from it, not sent.
        url = "http://127.0.0.1:9/v1" if self._model is None and self.llm is not None and self.llm.embedded else None
        client, self._client = self._client, None
        try:
            model, options = self._model_and_options(url)
            estimator = into or SpendEstimator(
                counter=counter_for(self.llm if self._model is None else None),
                prices=options.get("prices", (0.0, 0.0)),
                max_output_tokens=self._max_output_tokens(model),
                history=CacheHistory.from_cache(cache, options.get("model_name") or "") if cache else None,
            )
            peek = DryRunCache(cache)
            chain = KnowledgeChain(model, cache=peek, spend=estimator, **options)  # type: ignore[arg-type]
            async for post in _aiter(posts):
                try:
                    await estimator.add(chain, peek, post, await _demonstrations_for(post, demonstrations))
                except LLMCallError as exc:
                    estimator.estimate.skipped[post.id] = str(exc)
            return estimator.estimate
        finally:
            if self._client is not None:
                await self._client.aclose()
            self._client = client
            if opened is not None:
                opened.close()

    async def aclose(self) -> None:
        """Close the client, the server and the cache; each is closed even when another fails to close
        (a client whose loop has stopped: its sockets are dropped, the rest still closes)."""
        try:
            if self._client is not None:
                client, self._client = self._client, None
                await client.aclose()
        except RuntimeError as exc:  # "Event loop is closed": the sockets died with their loop
            log.debug("LLM client of a stopped loop: %s", exc)
        finally:
            await self._close_server_and_cache()

    async def _close_server_and_cache(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.__aexit__()
        if self.cache is not None:
            if not isinstance(self._cache_arg, str | Path):
                await asyncio.to_thread(self.cache.flush)  # the caller's cache stays open, its writes land
            else:
                await self.cache.aclose()
        self.cache = None

    @property
    def run_key(self) -> str:
        """Names the chain configuration; results and failures in the cache are filed under it."""
        return self._chain().fingerprint

    def _chain(self) -> KnowledgeChain:
        if self.chain is None:
            raise RuntimeError("the builder is not open: use `async with KnowledgeBuilder(...) as builder`")
        return self.chain

    async def ainvoke(self, post: Post, demonstrations: Sequence[Demonstration] = ()) -> KnowledgeResult:
        """One post's knowledge (errors raised, not recorded)."""
        return await self._chain().ainvoke(post, demonstrations)

    async def astream(
        self,
        posts: Iterable[Post] | AsyncIterable[Post],
        demonstrations: DemonstrationSource = None,
        *,
        concurrency: int | None = None,
        progress: bool | None = None,
    ) -> AsyncIterator[KnowledgeResult | KnowledgeFailure]:
        """Results and failures as they finish (not in input order); at most ``concurrency`` posts in flight.

        Posts are pulled from ``posts`` only as workers free up, so a long or endless source is fine.
        Every result and failure is also filed in the cache, under :attr:`run_key`.
        """
        from tqdm.auto import tqdm

        chain = self._chain()
        workers = concurrency or self.concurrency
        inbox: asyncio.Queue[Any] = asyncio.Queue(maxsize=workers)
        outbox: asyncio.Queue[Any] = asyncio.Queue(maxsize=workers)
        total = len(posts) if isinstance(posts, Sequence) else None
        show = self.progress if progress is None else progress
        bar = tqdm(total=total, desc="knowledge", unit="post", disable=not show, dynamic_ncols=True)

        async def feed() -> None:
            try:
                if isinstance(posts, AsyncIterable):
                    async for post in posts:
                        await inbox.put(post)
                else:
                    for post in posts:
                        await inbox.put(post)
            finally:
                for _ in range(workers):
                    await inbox.put(_DONE)

        async def work() -> None:
            try:
                while (post := await inbox.get()) is not _DONE:
                    await outbox.put(await self._one(chain, post, demonstrations))
            except Exception as exc:  # not a post's failure (those are results): the cache itself broke
                await outbox.put(_Crash(exc))
            finally:
                await outbox.put(_DONE)

        feeder = asyncio.create_task(feed())
        tasks = [asyncio.create_task(work()) for _ in range(workers)]
        finished = failed = 0
        try:
            while finished < workers:
                item = await outbox.get()
                if item is _DONE:
                    finished += 1
                    continue
                if isinstance(item, _Crash):
                    raise item.error
                failed += isinstance(item, KnowledgeFailure)
                bar.update(1)
                if failed:
                    bar.set_postfix(failed=failed, refresh=False)
                yield item
            await feeder  # re-raises an error of the posts' source
        finally:
            bar.close()
            for task in (feeder, *tasks):
                task.cancel()
            await asyncio.gather(feeder, *tasks, return_exceptions=True)

    async def abuild(
        self,
        posts: Iterable[Post] | AsyncIterable[Post],
        demonstrations: DemonstrationSource = None,
        *,
        concurrency: int | None = None,
        progress: bool | None = None,
        keep_results: bool = True,
    ) -> BuildReport:
        """Build every post; one post's failure never stops the rest. Returns the report (with the
        results, in finishing order, unless ``keep_results=False``)."""
        chain = self._chain()
        before = dict(chain.usage)
        started = time.perf_counter()
        report = BuildReport()
        async for item in self.astream(posts, demonstrations, concurrency=concurrency, progress=progress):
            report.total += 1
            if isinstance(item, KnowledgeFailure) and item.kind == "budget":
                report.left.append(item.post_id)
                continue
            if isinstance(item, KnowledgeFailure):
                report.failures.append(item)
                continue
            report.succeeded += 1
            if item.warnings:
                report.warnings[item.post_id] = list(item.warnings)
            if keep_results:
                report.results.append(item)
        report.usage = {stage: _minus(usage, before[stage]) for stage, usage in chain.usage.items()}
        report.wall_s = time.perf_counter() - started
        report.spend = self.spend.report.model_copy(deep=True) if self.spend is not None else None
        return report

    def build(
        self,
        posts: Iterable[Post],
        demonstrations: DemonstrationSource = None,
        **options: Any,
    ) -> BuildReport:
        """Synchronous :meth:`abuild`, opening and closing the builder around it; works inside a running
        event loop too (a notebook)."""

        async def run() -> BuildReport:
            async with self:
                return await self.abuild(posts, demonstrations, **options)

        return run_sync(run())

    async def _one(self, chain: KnowledgeChain, post: Post, source: DemonstrationSource) -> Any:
        try:
            demonstrations = await _demonstrations_for(post, source)
            result = await chain.ainvoke(post, demonstrations)
        except Exception as exc:
            kind, retryable = classify_error(exc)
            if kind == "budget":  # not the post's failure: the budget stopped the build before its call
                return KnowledgeFailure(post_id=post.id, stage=getattr(exc, "stage", None), kind=kind, message=str(exc))
            message = self._redact(str(exc))
            if kind == "auth" and self.llm is not None:
                message += f" (check the key in ${self.llm.api_key_env})"
            failure = KnowledgeFailure(
                post_id=post.id,
                stage=getattr(exc, "stage", None),
                kind=kind,
                message=message,
                # Not retried within this run, but a later run may succeed unless the key or the post is bad
                retryable=retryable or (not isinstance(exc, LLMCallError) and kind not in ("auth", "input")),
            )
            if self.cache is not None:
                await self.cache.aput_failure(chain.fingerprint, failure)
            return failure
        if self.cache is not None:
            await self.cache.aput_result(chain.fingerprint, result)
        return result

    def _redact(self, text: str) -> str:
        key = self.llm.resolve_key().get_secret_value() if self.llm is not None else ""
        return text.replace(key, "***") if len(key) >= 8 else text


async def _aiter(posts: Iterable[Post] | AsyncIterable[Post]) -> AsyncIterator[Post]:
    if isinstance(posts, AsyncIterable):
        async for post in posts:
            yield post
    else:
        for post in posts:
            yield post


async def _demonstrations_for(post: Post, source: DemonstrationSource) -> Sequence[Demonstration]:
    if source is None:
        return ()
    if isinstance(source, Mapping):
        return source.get(post.id, ())
    found = source(post)
    return await found if inspect.isawaitable(found) else found


def _minus(after: Usage, before: Usage) -> Usage:
    return Usage(**{name: getattr(after, name) - getattr(before, name) for name in Usage.model_fields})
