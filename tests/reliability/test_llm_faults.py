"""Point 2: LLM faults through the loopback server. With 30 % of answers faulty over 1,000 posts, every
post ends with knowledge or a recorded retryable failure, none is lost, Retry-After is waited, and the
retry policy is the caller's to choose."""

from __future__ import annotations

import time
from pathlib import Path

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_none

from kecpm.agents import KnowledgeBuilder, KnowledgeCache, KnowledgeFailure, KnowledgeResult
from kecpm.llm import LLMConfig, classify_error, retry_policy
from kecpm.testing import FAULTS, LoopbackServer


# The timeout sits well above a loaded machine's answer time and well below the hang, so only hangs time out.
def _config(server: LoopbackServer, timeout: float = 2.0) -> LLMConfig:
    return LLMConfig(base_url=server.base_url, model="loopback", timeout=timeout)


async def test_thirty_percent_faults_over_1000_posts_lose_nothing(server, make_posts, tmp_path: Path) -> None:
    posts = make_posts(1000, prefix="fault")
    rate = 0.30 / len(FAULTS)
    server.configure(faults=dict.fromkeys(FAULTS, rate), retry_after=0.05, hang=5.0, seed=7)
    cache_path = tmp_path / "k.sqlite"
    # Few, fast retries: some posts must run out of them, so failures are recorded too.
    policy = retry_policy(1, initial=0.005, max_wait=0.2)
    async with KnowledgeBuilder(
        _config(server), cache=cache_path, rounds=0, concurrency=48, retry=policy, progress=False
    ) as builder:
        report = await builder.abuild(posts)
        run = builder.run_key
    stats = server.stats()
    assert set(stats["faults"]) == set(FAULTS), stats["faults"]  # every kind of fault was met
    assert sum(stats["faults"].values()) > 0.25 * stats["requests"]
    done = {r.post_id for r in report.results}
    failed = {f.post_id for f in report.failures}
    # None lost, none counted twice: each post ends exactly once, as knowledge or as a failure.
    assert report.total == 1000 and len(report.results) + len(report.failures) == 1000
    assert done | failed == {p.id for p in posts} and not done & failed
    assert 0 < len(failed) < 200
    assert all(f.retryable for f in report.failures), {f.kind for f in report.failures if not f.retryable}
    assert {f.kind for f in report.failures} <= {
        "rate_limit",
        "server",
        "connection",
        "timeout",
        "malformed_response",
        "schema",
        "refusal",
    }
    # The cache holds the same: a result or a failure per post.
    with KnowledgeCache(cache_path) as cache:
        assert {r.post_id for r in cache.results(run)} == done
        assert {f.post_id for f in cache.failures(run)} == failed
        assert cache.claims() == []  # every lease ended
    # Retrying the failures alone, with the faults gone, finishes them and pays for no finished call.
    server.configure(faults={})
    server.reset()
    async with KnowledgeBuilder(_config(server), cache=cache_path, rounds=0, concurrency=48, progress=False) as builder:
        with KnowledgeCache(cache_path) as cache:
            todo = [p for p in posts if p.id in {f.post_id for f in cache.failures(run)}]
        retried = await builder.abuild(todo)
    assert retried.failed == 0 and retried.succeeded == len(failed)
    assert server.stats()["completions"] == len(failed)
    with KnowledgeCache(cache_path) as cache:
        assert {r.post_id for r in cache.results(run)} == {p.id for p in posts}
        assert cache.failures(run) == []


async def test_retry_after_is_waited(server, make_posts) -> None:
    (post,) = make_posts(1, prefix="wait")
    server.configure(script=["429"], retry_after=0.6)
    # The backoff alone would wait about 1 ms: only the server's Retry-After explains 0.6 s.
    policy = retry_policy(2, initial=0.001, max_wait=5.0)
    async with KnowledgeBuilder(_config(server), rounds=0, retry=policy, progress=False) as builder:
        started = time.perf_counter()
        result = await builder.ainvoke(post)
        waited = time.perf_counter() - started
    assert isinstance(result, KnowledgeResult)
    assert server.stats()["requests"] == 2
    assert 0.6 <= waited < 2.0
    assert result.steps[0].usage.retries == 1


async def test_retry_after_is_capped_by_the_policy(server, make_posts) -> None:
    (post,) = make_posts(1, prefix="cap")
    server.configure(script=["429"], retry_after=30)
    policy = retry_policy(2, initial=0.001, max_wait=0.2)
    async with KnowledgeBuilder(_config(server), rounds=0, retry=policy, progress=False) as builder:
        started = time.perf_counter()
        await builder.ainvoke(post)
    assert time.perf_counter() - started < 2.0


async def test_the_retry_policy_is_configurable(server, make_posts) -> None:
    posts = make_posts(2, prefix="policy")
    # A number of retries: three 500s are absorbed by three retries.
    server.configure(script=["500", "503", "500"])
    async with KnowledgeBuilder(
        _config(server), rounds=0, retry=retry_policy(3, initial=0.001), progress=False
    ) as builder:
        report = await builder.abuild(posts[:1])
    assert report.succeeded == 1 and server.stats()["requests"] == 4
    # A policy of one's own: never retry. The 500 becomes a recorded, retryable failure at once.
    server.reset()
    server.configure(script=["500"])
    never = AsyncRetrying(
        stop=stop_after_attempt(1), wait=wait_none(), retry=retry_if_exception(lambda e: classify_error(e)[1])
    )
    async with KnowledgeBuilder(_config(server), rounds=0, retry=never, progress=False) as builder:
        report = await builder.abuild(posts[1:])
    assert server.stats()["requests"] == 1
    (failure,) = report.failures
    assert isinstance(failure, KnowledgeFailure)
    assert failure.post_id == posts[1].id and failure.kind == "server" and failure.retryable
