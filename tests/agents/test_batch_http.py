"""The batch builder over real HTTP, against the loopback OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from kecpm.agents import Critique, Knowledge, KnowledgeBuilder, KnowledgeCache, KnowledgeFailure, KnowledgeResult
from kecpm.llm import LLMConfig, retry_policy
from kecpm.post_files import read_kecpm, validate_kecpm
from kecpm.records import Demonstration, Post
from kecpm.testing import LoopbackServer

FAST_RETRY = retry_policy(3, initial=0.01, max_wait=1.0)


def _config(server: LoopbackServer, **options) -> LLMConfig:
    return LLMConfig(base_url=server.base_url, model="loopback", timeout=options.pop("timeout", 5.0), **options)


async def test_build_streams_schema_valid_knowledge_and_reruns_from_cache(
    server: LoopbackServer, posts: list[Post], tmp_path: Path
) -> None:
    demos = {p.id: [Demonstration.from_post(posts[(i + 1) % len(posts)])] for i, p in enumerate(posts)}
    async with KnowledgeBuilder(
        _config(server), cache=tmp_path / "k.sqlite", concurrency=4, progress=False, retry=FAST_RETRY
    ) as builder:
        report = await builder.abuild(posts, demos)
        assert report.total == report.succeeded == len(posts)
        assert report.failed == 0
        stats = server.stats()
        assert stats["completions"] == 3 * len(posts)  # generate, critique (rejects), revise
        assert stats["tools"] == {"Knowledge": 2 * len(posts), "Critique": len(posts)}
        assert stats["max_in_flight"] <= 4
        assert report.usage["generate"].calls == len(posts)
        assert report.usage["critique"].input_tokens > 0
        for result in report.results:
            Knowledge(statements=result.knowledge)
            assert isinstance(result.steps[1].output, Critique)
        # A rerun makes no call
        again = await builder.abuild(posts, demos)
        assert server.stats()["requests"] == stats["requests"]
        assert again.calls == 0 and again.cached == 3 * len(posts)
        assert {r.post_id: r.knowledge for r in again.results} == {r.post_id: r.knowledge for r in report.results}
        # Export in the KECPM knowledge format, record by record
        assert builder.cache is not None
        path, missing = builder.cache.export_kecpm(posts, tmp_path / "val_ofa_knowledge.json", run=builder.run_key)
    assert missing == []
    assert validate_kecpm(path) == []
    written = read_kecpm(path)
    assert [p.id for p in written] == [p.id for p in posts]
    assert all(p.knowledge for p in written)
    assert written[0].image_descriptions == posts[0].image_descriptions


async def test_results_stream_as_they_finish_with_bounded_concurrency(
    server: LoopbackServer, posts: list[Post]
) -> None:
    server.configure(latency=0.05)
    seen_before_first = None
    async with KnowledgeBuilder(_config(server), concurrency=3, rounds=0, progress=False) as builder:
        count = 0
        async for item in builder.astream(iter(posts[:12])):
            assert isinstance(item, KnowledgeResult)
            if seen_before_first is None:
                seen_before_first = server.stats()["requests"]
            count += 1
    assert count == 12
    assert seen_before_first is not None and seen_before_first < 12  # the first result came before the last call
    assert server.stats()["max_in_flight"] == 3


async def test_early_stop_when_the_critique_accepts(server: LoopbackServer, posts: list[Post]) -> None:
    server.configure(accept=True)
    async with KnowledgeBuilder(_config(server), rounds=3, progress=False) as builder:
        result = await builder.ainvoke(posts[0])
    assert [s.stage for s in result.steps] == ["generate", "critique"]
    assert result.accepted
    assert server.stats()["completions"] == 2


@pytest.mark.parametrize("fault", ["429", "500", "503", "reset", "timeout", "malformed"])
async def test_transport_faults_are_retried(server: LoopbackServer, posts: list[Post], fault: str) -> None:
    server.configure(script=[fault, fault], hang=2.0)
    async with KnowledgeBuilder(_config(server, timeout=0.5), rounds=0, progress=False, retry=FAST_RETRY) as builder:
        result = await builder.ainvoke(posts[0])
    assert result.steps[0].usage.retries == 2
    stats = server.stats()
    assert stats["faults"] == {fault: 2}
    assert stats["completions"] == 1


async def test_retry_after_is_honoured(server: LoopbackServer, posts: list[Post]) -> None:
    server.configure(script=["429"], retry_after=0.4)
    async with KnowledgeBuilder(
        _config(server), rounds=0, progress=False, retry=retry_policy(2, initial=0.001)
    ) as builder:
        started = time.perf_counter()
        await builder.ainvoke(posts[0])
        elapsed = time.perf_counter() - started
    assert elapsed >= 0.4  # the backoff alone would have waited about 1 ms


@pytest.mark.parametrize("fault", ["truncated", "empty", "refusal"])
async def test_bad_answers_are_reasked_once_then_recorded(
    server: LoopbackServer, posts: list[Post], fault: str, tmp_path: Path
) -> None:
    # The first post's answer is bad twice (a failure), the second post's once (re-asked, then fine)
    server.configure(script=[fault, fault, fault])
    async with KnowledgeBuilder(
        _config(server), cache=tmp_path / "k.sqlite", rounds=0, concurrency=1, progress=False
    ) as builder:
        report = await builder.abuild(posts[:3])
        run = builder.run_key
    assert report.succeeded == 2
    (failure,) = report.failures
    assert failure.post_id == posts[0].id
    assert failure.stage == "generate"
    assert failure.kind == ("refusal" if fault == "refusal" else "schema")
    assert failure.retryable
    with KnowledgeCache(tmp_path / "k.sqlite") as cache:
        assert [f.post_id for f in cache.failures(run)] == [posts[0].id]


async def test_a_refused_key_fails_fast_and_is_never_written(
    server: LoopbackServer, posts: list[Post], tmp_path: Path
) -> None:
    planted = "sk-kecpm-test-PLANTED-0123456789"
    server.configure(api_key="sk-the-right-key-000000")
    config = _config(server, api_key=planted)
    assert planted not in repr(config) and planted not in config.model_dump_json()
    async with KnowledgeBuilder(config, cache=tmp_path / "k.sqlite", progress=False, retry=FAST_RETRY) as builder:
        report = await builder.abuild(posts[:4])
    assert report.succeeded == 0
    assert {f.kind for f in report.failures} == {"auth"}
    assert not any(f.retryable for f in report.failures)
    assert server.stats()["unauthorized"] == 4  # one request per post: no retries of a refused key
    assert "check the key in $KECPM_LLM_API_KEY" in report.failures[0].message
    for path in tmp_path.iterdir():
        assert planted.encode() not in path.read_bytes()


async def test_an_interrupted_build_resumes_without_repeating_finished_calls(
    server: LoopbackServer, posts: list[Post], tmp_path: Path
) -> None:
    sample = posts[:10]
    # The endpoint dies after 13 answers: the first run ends with failures (no retries)
    server.configure(script=[None] * 13 + ["503"] * 100)
    cache = tmp_path / "k.sqlite"
    async with KnowledgeBuilder(_config(server), cache=cache, concurrency=2, progress=False, retry=0) as builder:
        first = await builder.abuild(sample)
    assert first.failed > 0
    assert server.stats()["completions"] == 13
    server.configure(script=[])
    async with KnowledgeBuilder(_config(server), cache=cache, concurrency=2, progress=False, retry=0) as builder:
        second = await builder.abuild(sample)
        assert builder.cache is not None
        assert builder.cache.failures(builder.run_key) == []
    assert second.succeeded == len(sample)
    stats = server.stats()
    assert stats["completions"] == 3 * len(sample)  # 13 + the 17 that had not finished; none twice
    assert stats["repeated"] == 0
    assert second.cached == 13


async def test_one_bad_post_does_not_stop_the_batch(server: LoopbackServer, posts: list[Post]) -> None:
    def demonstrations(post: Post) -> list[Demonstration]:
        if post.id == posts[1].id:
            raise RuntimeError("the store is down for this one")
        return []

    async with KnowledgeBuilder(_config(server), rounds=0, progress=False) as builder:
        report = await builder.abuild(posts[:5], demonstrations)
    assert report.succeeded == 4
    assert [(f.post_id, f.kind) for f in report.failures] == [(posts[1].id, "RuntimeError")]
    assert isinstance(report.failures[0], KnowledgeFailure)


async def test_a_broken_cache_stops_the_build_loudly(server: LoopbackServer, posts: list[Post], tmp_path: Path) -> None:
    class BrokenCache(KnowledgeCache):
        def put_result(self, run, result) -> None:
            raise OSError("disk full")

        async def aput_result(self, run, result) -> None:  # what the builder calls: off the loop
            raise OSError("disk full")

    with BrokenCache(tmp_path / "k.sqlite") as cache:
        async with KnowledgeBuilder(_config(server), cache=cache, rounds=0, progress=False) as builder:
            with pytest.raises(OSError, match="disk full"):
                await builder.abuild(posts[:3])


async def test_requests_force_the_function_and_cap_tokens_as_configured(
    server: LoopbackServer, posts: list[Post]
) -> None:
    for param in ("max_completion_tokens", "max_tokens"):
        config = _config(server, max_tokens=77, max_tokens_param=param)
        async with KnowledgeBuilder(config, rounds=0, progress=False) as builder:
            await builder.ainvoke(posts[0])
        sent = server.stats()["last_request"]
        assert sent[param] == 77
        assert sent["tool_choice"]["function"]["name"] == "Knowledge"
        assert [t["function"]["name"] for t in sent["tools"]] == ["Knowledge"]


async def test_a_lease_outlasting_its_term_is_renewed_so_no_call_is_paid_twice(
    server: LoopbackServer, posts: list[Post], tmp_path: Path
) -> None:
    server.configure(latency=1.0)  # each call takes five lease terms
    cache = tmp_path / "k.sqlite"
    options = {"cache": cache, "concurrency": 2, "rounds": 0, "progress": False}
    async with KnowledgeBuilder(_config(server), **options) as a, KnowledgeBuilder(_config(server), **options) as b:
        assert a.cache is not None and b.cache is not None and a.cache.owner != b.cache.owner
        a.cache.lease_s = b.cache.lease_s = 0.2
        first, second = await asyncio.gather(a.abuild(posts[:2]), b.abuild(posts[:2]))
        assert a.cache.claims() == []
    assert first.succeeded == second.succeeded == 2
    stats = server.stats()
    assert stats["repeated"] == 0, "a waiter took over a lease whose holder was still calling"
    assert stats["completions"] == 2
