"""The spend guard's flags and printing, shared by ``knowledge build``, ``run`` and ``experiment``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ._output import console, err_console, print_error, print_table

if TYPE_CHECKING:
    from ..agents import SpendEstimate, SpendGuard, SpendLimit, SpendReport
    from ..llm import LLMConfig

EXIT_BUDGET = 4
"""The exit code of a run that the budget stopped (1: errors or failed posts, 2: bad arguments)."""

ESTIMATE_NAME = "spend_estimate.json"

DryRunOption = Annotated[
    bool,
    typer.Option(
        "--dry-run", help="Count the LLM calls, tokens and cost the run would make, per stage, and send nothing."
    ),
]
BudgetOption = Annotated[
    float | None,
    typer.Option(
        "--budget",
        min=0.0,
        help="Most money the LLM calls may cost (at --input-price/--output-price); the run stops before crossing it.",
    ),
]
BudgetTokensOption = Annotated[
    int | None,
    typer.Option("--budget-tokens", min=0, help="Most input + output tokens the LLM calls may use."),
]


def spend_limit(cost: float | None, tokens: int | None) -> SpendLimit | None:
    from ..agents import SpendLimit

    return SpendLimit(cost=cost, tokens=tokens) if cost is not None or tokens is not None else None


def spend_guard(limit: SpendLimit | None, llm: LLMConfig) -> SpendGuard | None:
    """The guard for ``limit`` at ``llm``'s prices; a money budget without prices is a usage error."""
    from ..agents import SpendGuard

    if limit is None:
        return None
    try:
        return SpendGuard.for_llm(limit, llm)
    except ValueError as exc:
        print_error(exc)
        raise typer.Exit(2) from None


def print_estimate(estimate: SpendEstimate, out: Path | None = None) -> None:
    """The dry run's table and what its figures rest on; written to ``OUT/spend_estimate.json`` too."""
    print_table(
        f"dry run: {estimate.posts} posts ({estimate.posts_cached} answered by the cache); nothing was sent",
        ["stage", "calls", "cached", "input tokens", "output tokens", "cost"],
        estimate.rows(),
    )
    history = estimate.history
    basis = (
        f"an accept rate of {history.accept_rate:.0%} over {history.critiques} cached critiques and the mean "
        "answer lengths of this model's cached calls"
        if history.accept_rate is not None
        else "no cached critiques of this model: expected = at most"
    )
    console.print(
        f"figures: expected / at most. Input tokens counted by the {estimate.counter} counter"
        + (f" (stated error {estimate.counter_error:.0%}; the bound includes it)" if estimate.counter_error else "")
        + f"; output at most {estimate.max_output_tokens} tokens per call; expected from {basis}. "
        f"Calls counted exactly: {estimate.total().exact_calls}; the rest depend on earlier answers. "
        "Re-asks and retries are not in the figures (the budget guard covers them)."
    )
    for post_id, problem in estimate.skipped.items():
        err_console.print(f"[yellow]skipped:[/yellow] {post_id}: {problem}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        payload = estimate.model_dump(mode="json") | {"total": estimate.total().model_dump()}
        (out / ESTIMATE_NAME).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        console.print(f"estimate: {out / ESTIMATE_NAME}")


def spend_summary(spend: SpendReport) -> dict[str, object]:
    return spend.model_dump(mode="json") | {"tokens": spend.tokens}
