"""The spend guard against the loopback server: a dry run sends nothing, a budget is never crossed (at any
concurrency), and a rerun with a higher budget resumes without repeating a call."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kecpm.agents import (
    ApproximateTokenCounter,
    BudgetExhausted,
    KnowledgeBuilder,
    SpendGuard,
    SpendLimit,
)
from kecpm.agents.spend import _later_calls
from kecpm.cli import app
from kecpm.llm import LLMConfig
from kecpm.records import Post
from kecpm.testing import LoopbackServer

runner = CliRunner()

PRICES = ["--input-price", "2.0", "--output-price", "8.0"]


def _config(server: LoopbackServer, **changes: object) -> LLMConfig:
    values = {"base_url": server.base_url, "model": "loopback", "max_tokens_param": "max_tokens", "max_tokens": 120}
    return LLMConfig(**(values | changes))


def test_cli_dry_run_then_half_a_budget_then_the_rest(
    knowledge_build_args, server: LoopbackServer, split_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    common = [*PRICES, "--rounds", "1", "--max-tokens", "120", "--concurrency", "4"]
    dry = runner.invoke(app, knowledge_build_args(split_dir / "val.json", out, server, *common, "--dry-run"))
    assert dry.exit_code == 0, dry.output
    assert server.stats()["requests"] == 0  # nothing reached the server
    assert not (out / "knowledge.sqlite").exists()  # nor was a cache made
    estimate = json.loads((out / "spend_estimate.json").read_text())
    total = estimate["total"]
    # 21 posts: every generate is certain and counted exactly; critique and revise at most once each
    assert estimate["posts"] == 21 and total["exact_calls"] == 21 and total["calls_max"] == 63
    assert estimate["stages"]["generate"]["calls"] == 21
    assert "dry run: 21 posts" in dry.output and "nothing was sent" in dry.output

    # A budget of about half of the expected cost: it stops before crossing it
    budget = round(total["cost"] / 2, 6)
    half = runner.invoke(
        app, knowledge_build_args(split_dir / "val.json", out, server, *common, "--budget", str(budget))
    )
    assert half.exit_code == 4, half.output
    assert "stopped by the budget" in half.output and "rerun with a higher --budget" in half.output
    report = json.loads((out / "knowledge_report.json").read_text())
    spent = report["spend"]
    assert spent["stopped"] and spent["cost"] <= budget
    assert sum(u["cost"] for u in report["usage"].values()) <= budget  # the server's own usage figures
    made = server.stats()["completions"]
    assert 0 < made < 63 and report["left"] and report["succeeded"] < 21
    assert spent["calls"] == made
    assert report["succeeded"] + len(report["left"]) == 21 and not report["failures"]

    # A higher budget finishes, repeating no call that was already made
    rest = runner.invoke(app, knowledge_build_args(split_dir / "val.json", out, server, *common, "--budget", "100"))
    assert rest.exit_code == 0, rest.output
    stats = server.stats()
    assert stats["repeated"] == 0 and stats["distinct"] == stats["completions"] == 63
    assert json.loads((out / "knowledge_report.json").read_text())["succeeded"] == 21
    # and now the dry run finds every post in the cache
    again = runner.invoke(app, knowledge_build_args(split_dir / "val.json", out, server, *common, "--dry-run"))
    assert again.exit_code == 0, again.output
    assert json.loads((out / "spend_estimate.json").read_text())["posts_cached"] == 21
    assert server.stats()["requests"] == stats["requests"]


def test_a_money_budget_needs_prices(knowledge_build_args, server: LoopbackServer, split_dir: Path, tmp_path: Path):
    result = runner.invoke(app, knowledge_build_args(split_dir / "val.json", tmp_path / "o", server, "--budget", "1"))
    assert result.exit_code == 2 and "needs prices" in result.output
    assert server.stats()["requests"] == 0


@pytest.mark.parametrize("concurrency", [1, 16])
async def test_the_bound_holds_for_calls_in_flight(
    server: LoopbackServer, posts: list[Post], tmp_path: Path, concurrency
):
    server.configure(latency=0.05)
    limit = SpendLimit(tokens=6000)
    async with KnowledgeBuilder(
        _config(server), cache=tmp_path / "k.sqlite", rounds=1, concurrency=concurrency, progress=False, spend=limit
    ) as builder:
        report = await builder.abuild(posts[:12])
    assert report.spend is not None and report.spend.stopped
    used = sum(u.input_tokens + u.output_tokens for u in report.usage.values())
    assert used == report.spend.tokens <= 6000
    assert report.left and report.succeeded + len(report.left) == 12 and not report.failures
    if concurrency > 1:
        # Calls were in flight together, and the guard let requests wait rather than stop early.
        assert server.stats()["max_in_flight"] > 1
    assert report.spend.tokens > 6000 / 2  # it did not give up with most of the budget unused


async def test_a_guard_shared_by_two_builders_bounds_both(server: LoopbackServer, posts: list[Post], tmp_path: Path):
    guard = SpendGuard(SpendLimit(tokens=3000), max_output_tokens=120)
    reports = []
    for name in ("a", "b"):
        async with KnowledgeBuilder(
            _config(server), cache=tmp_path / f"{name}.sqlite", rounds=0, progress=False, spend=guard
        ) as builder:
            reports.append(await builder.abuild(posts[:10]))
    assert guard.report.tokens <= 3000 and reports[-1].left
    assert sum(r.calls for r in reports) == guard.report.calls == server.stats()["completions"]


async def test_a_refused_guard_refuses_every_later_request() -> None:
    guard = SpendGuard(SpendLimit(tokens=50), max_output_tokens=40, counter=ApproximateTokenCounter())
    payload = {"messages": [{"role": "user", "content": "x" * 200}], "max_tokens": 40}
    with pytest.raises(BudgetExhausted, match="stopped before crossing the budget"):
        await guard.reserve(payload, "generate")
    with pytest.raises(BudgetExhausted, match="is spent"):
        await guard.reserve({"messages": [], "max_tokens": 1}, "generate")
    assert guard.report.stopped and guard.report.calls == 0


async def test_a_waiting_request_goes_ahead_once_the_calls_in_flight_settle() -> None:
    guard = SpendGuard(SpendLimit(tokens=300), max_output_tokens=100, counter=ApproximateTokenCounter())
    payload = {"messages": [{"role": "user", "content": "y" * 40}]}
    first = await guard.reserve(payload)
    second = await guard.reserve(payload)  # both worst cases fit: 2 x (about 20 + 100)
    waiting = asyncio.ensure_future(guard.reserve(payload))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # a third would cross the limit while two are in flight
    guard.settle(first, 20, 10)
    guard.settle(second, 20, 10)
    third = await asyncio.wait_for(waiting, 1)
    guard.settle(third, 20, 10)
    assert guard.report.tokens == 90 and not guard.report.stopped


async def test_expected_figures_come_from_the_cache_history(
    server: LoopbackServer, posts: list[Post], tmp_path: Path
) -> None:
    server.configure(accept=True)  # every critique accepts: no revise is ever made
    cache = tmp_path / "k.sqlite"
    async with KnowledgeBuilder(_config(server), cache=cache, rounds=2, progress=False) as builder:
        await builder.abuild(posts[:4])
    before = server.stats()["requests"]
    estimate = await KnowledgeBuilder(_config(server), cache=cache, rounds=2, progress=False).aestimate(posts[:10])
    assert server.stats()["requests"] == before
    assert estimate.posts_cached == 4 and estimate.stages["generate"].cached == 4
    assert estimate.history.accept_rate == 1.0
    critique, revise = estimate.stages["critique"], estimate.stages["revise"]
    assert critique.calls == 6 and critique.calls_max == 12  # accepted in round 1; at most 2 rounds
    assert revise.calls == 0 and revise.calls_max == 12
    mean = estimate.history.mean_output_tokens["generate"]
    assert estimate.stages["generate"].output_tokens == pytest.approx(6 * mean)
    assert estimate.stages["generate"].output_tokens_max == 6 * 120


async def test_a_post_part_built_is_estimated_from_where_it_stands(
    server: LoopbackServer, posts: list[Post], tmp_path: Path
) -> None:
    cache = tmp_path / "k.sqlite"
    async with KnowledgeBuilder(_config(server), cache=cache, rounds=0, progress=False) as builder:
        await builder.abuild(posts[:3])  # generate only
    estimate = await KnowledgeBuilder(_config(server), cache=cache, rounds=2, progress=False).aestimate(posts[:3])
    # generate is cached; round 1's critique is the first call to make, and is counted exactly
    generate, critique, revise = (estimate.stages[s] for s in ("generate", "critique", "revise"))
    assert generate.cached == 3 and generate.calls_max == 0
    assert critique.exact_calls == 3 and critique.calls_max == 6 and revise.calls_max == 6
    # an exactly counted call's bound is its count (plus the counter's stated error), not a guess
    assert critique.input_tokens_max < 2 * critique.input_tokens


def test_later_calls_follow_the_rounds() -> None:
    assert _later_calls("generate", 0, 2, None) == [
        ("critique", 1, 1.0),
        ("revise", 1, 1.0),
        ("critique", 2, 1.0),
        ("revise", 2, 1.0),
    ]
    assert _later_calls("critique", 1, 1, 0.5) == [("revise", 1, 0.5)]
    assert _later_calls("revise", 1, 2, 0.5) == [("critique", 2, 1.0), ("revise", 2, 0.5)]
    assert _later_calls("generate", 0, 0, None) == []
    # dropping what the critique marks unsupported: a round is its critique alone
    assert _later_calls("generate", 0, 2, 0.5, revise=False) == [("critique", 1, 1.0), ("critique", 2, 0.5)]
    assert _later_calls("critique", 1, 2, 0.5, revise=False) == [("critique", 2, 0.5)]


async def test_a_server_counting_more_than_reserved_raises_later_reservations() -> None:
    guard = SpendGuard(SpendLimit(tokens=10_000), max_output_tokens=10, counter=ApproximateTokenCounter())
    payload = {"messages": [{"role": "user", "content": "z" * 400}], "max_tokens": 10}
    first = await guard.reserve(payload)
    guard.settle(first, 3 * first.counted, 10)  # the server counted three times what was counted here
    second = await guard.reserve(payload)
    assert second.input_tokens >= 3 * second.counted > first.input_tokens
