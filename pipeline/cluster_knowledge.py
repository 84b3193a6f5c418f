"""Knowledge for many posts on a Ray cluster: posts in chunks, each chunk a Ray task that runs the
pipeline's own stages (:class:`~kecpm.pipeline.stages.RetrieveDemonstrations` and
:func:`~kecpm.pipeline.stages.knowledge_builder`) against the cluster's one call cache.

Every task's builder files its calls, results and failures in the cache actor of
:mod:`.cluster_cache`, so a call is paid once across the cluster, and the limits on calls in flight
(``concurrency``) and started per second (``cluster.requests_per_second``) hold for the cluster as a
whole: the actor enforces both; each task also keeps only its share of posts in flight, so that
waiting for a slot is rare. A task lost with its node is run again by Ray on another one: its
finished calls come from the cache and only the calls it had in flight are made again (once their
leases run out, ``cluster.lease_s``).

The LLM must be an endpoint every node reaches (the embedded model lives in one process), and its API
key is read, at call time, from the environment of each node (it never travels with the tasks).

>>> report = build_knowledge_on_cluster(config.model_copy(update={"ray": "auto"}), posts)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import time
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from ..agents import BuildReport, KnowledgeFailure, Usage
from ..errors import KecpmError
from ..records import Post
from .cluster import cluster_workers, ray_session
from .cluster_cache import SharedCache, start_cache_actor
from .config import PipelineConfig
from .stages import RetrieveDemonstrations, knowledge_builder

__all__ = ["ClusterBuildReport", "build_knowledge_on_cluster"]


class ClusterBuildReport(BuildReport):
    """A build report, plus what the cache actor saw: ``claims``, ``made`` (calls paid, by any attempt
    of any task), ``busy_limit`` (claims held back by the cluster's limits), ``peak_in_flight``."""

    cluster: dict[str, int] = Field(default_factory=dict)
    tasks: int = 0
    text_only_posts: int = 0


def build_knowledge_on_cluster(
    config: PipelineConfig,
    posts: Sequence[Post],
    *,
    progress: bool = False,
) -> ClusterBuildReport:
    """Build every post on the cluster ``config.ray`` names, into the cache at ``config.knowledge_cache``.

    One post's failure never stops the rest (it is in the report and the cache, as on the local path).
    """
    if config.llm.embedded:
        raise KecpmError(
            "a cluster build needs an LLM endpoint every node can reach (--llm URL / llm.base_url): "
            "the embedded model runs inside one process"
        )
    if config.budget is not None:  # each task would hold the whole budget: refused rather than overspent
        raise KecpmError("a budget is not held across a Ray cluster's tasks yet: build with --ray or a budget")
    if config.knowledge_cache is None:
        raise KecpmError("a cluster build needs a call cache (knowledge_cache): it is how the nodes share calls")
    from tqdm.auto import tqdm

    settings = config.cluster
    started = time.perf_counter()
    report = ClusterBuildReport()
    with ray_session(config.ray or "auto") as ray:
        actor = start_cache_actor(
            config.knowledge_cache,
            lease_s=settings.lease_s,
            concurrency=config.workers,
            requests_per_second=settings.requests_per_second,
        )
        try:
            tasks = cluster_workers(ray, settings.cpus_per_worker, settings.workers)
            share = max(1, math.ceil(config.workers / tasks))
            # The key never travels: each node reads it from its own environment.
            data = config.model_dump(mode="json", exclude={"ray"})
            build = ray.remote(_build_chunk).options(num_cpus=settings.cpus_per_worker, max_retries=-1)
            cache = SharedCache(actor)
            chunks = [posts[i : i + settings.chunk_size] for i in range(0, len(posts), settings.chunk_size)]
            pending = [build.remote(data, [p.model_dump_json() for p in chunk], cache, share) for chunk in chunks]
            report.tasks = len(pending)
            with tqdm(total=len(posts), desc="knowledge", unit="post", disable=not progress) as bar:
                while pending:
                    done, pending = ray.wait(pending, num_returns=1)
                    part = ray.get(done[0])
                    _merge(report, BuildReport.model_validate(part["report"]))
                    report.text_only_posts += part["text_only"]
                    bar.update(part["report"]["total"])
            report.cluster = ray.get(actor.statistics.remote())
        finally:
            ray.get(actor.close.remote())
            ray.kill(actor, no_restart=True)
    report.wall_s = time.perf_counter() - started
    return report


def _build_chunk(data: dict[str, Any], posts_json: list[str], cache: SharedCache, concurrency: int) -> dict[str, Any]:
    """One task: a chunk of posts through the pipeline's stages, on this worker's event loop."""
    config = PipelineConfig(**{**data, "concurrency": concurrency})
    posts = [Post.model_validate_json(text) for text in posts_json]

    retrieve = _retriever(config)
    before = retrieve.text_only

    async def run() -> dict[str, Any]:
        async with knowledge_builder(config, cache=cache) as builder:
            report = await builder.abuild(posts, retrieve, keep_results=False, progress=False)
        return {"report": report.model_dump(mode="json"), "text_only": retrieve.text_only - before}

    return asyncio.run(run())


@functools.cache
def _retriever_for(store: str | None, collection: str, selection: str) -> RetrieveDemonstrations:
    return RetrieveDemonstrations(
        PipelineConfig(store=store, collection=collection, selection=json.loads(selection), llm={"base_url": None})
    )


def _retriever(config: PipelineConfig) -> RetrieveDemonstrations:
    """The retrieval stage of this worker process: Ray reuses a worker for task after task, and the store
    (its embedding model above all) is opened once per process, not once per chunk."""
    return _retriever_for(config.store, config.collection, config.selection.model_dump_json())


def _merge(into: BuildReport, part: BuildReport) -> None:
    into.total += part.total
    into.succeeded += part.succeeded
    into.failures.extend(KnowledgeFailure.model_validate(f) for f in part.failures)
    into.warnings.update(part.warnings)
    for stage, usage in part.usage.items():
        into.usage[stage] = into.usage.get(stage, Usage()) + usage
