"""The leaderboard of an experiment: ``leaderboard.md``, ``leaderboard.json`` and two plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .grid import axis_label
from .results import CellSummary, ExperimentResult, Figure

__all__ = ["write_leaderboard"]


def _pct(figure: Figure | None) -> str:
    return "n/a" if figure is None else f"{100 * figure.mean:.1f} ± {100 * figure.std:.1f}"


def write_leaderboard(result: ExperimentResult, out: str | Path) -> dict[str, Path]:
    """``leaderboard.md``, ``leaderboard.json``, ``f1_by_cell.png`` and ``f1_vs_calls.png`` in ``out``.

    Cells are ranked by paper micro-F1 (mean over seeds); each links to its runs' manifests.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ranked = sorted(result.cells, key=lambda c: -c.f1["paper_micro_f1"].mean)
    rows = []
    for rank, cell in enumerate(ranked, start=1):
        links = " ".join(f"[{r.seed}]({r.manifest})" for r in cell.runs)
        q = cell.quality
        made = sum(r.llm_calls for r in cell.runs)
        cached = sum(r.cached_calls for r in cell.runs)
        rows.append(
            f"| {rank} | `{cell.name}` | {_pct(cell.f1['paper_micro_f1'])} | {_pct(cell.f1['paper_macro_f1'])} "
            f"| {_pct(cell.f1.get('standard_micro_f1'))} | {_pct(q.get('unsupported_share'))} "
            f"| {_pct(q.get('entity_mention_share'))} | {_num(q.get('words'))} "
            f"| {cell.calls_needed:.0f} | {cell.tokens:.0f} | {made} | {cached} | {links} |"
        )
    failed = [f"{c.name} (seed {r.seed}): {r.failed_posts}" for c in ranked for r in c.runs if r.failed_posts]
    grid = result.grid
    axes = "; ".join(f"{name}: {', '.join(axis_label(name, v) for v in values)}" for name, values in grid.axes.items())
    totals = result.totals
    lines = [
        f"# Leaderboard: {grid.name}",
        "",
        f"{len(result.cells)} cells x {len(grid.seeds)} seeds ({', '.join(map(str, grid.seeds))}) on "
        f"{grid.split}, {'synthetic sample ' + str(tuple(grid.synthetic_size)) if grid.data is None else grid.data}"
        f"{f', first {grid.limit} posts' if grid.limit else ''}, {grid.epochs} epochs. Axes: {axes}.",
        "",
        "Scores in %, mean ± std over seeds. *unsupported*: share of generated statements the first critique "
        "marked unsupported; *entities*: share of gold entities named in their post's knowledge; *words*: "
        "knowledge words per post; *calls/run*, *tokens/run*: LLM calls and tokens (in + out) one run of the "
        "cell takes on its own; *made* and "
        "*cached*: calls this grid paid for and answers it got from the shared cache (all seeds).",
        "",
        "| # | cell | micro-F1 | macro-F1 | standard micro-F1 | unsupported | entities | words "
        "| calls/run | tokens/run | made | cached | manifests (seed) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"LLM calls: {totals.get('llm_calls', 0)} made, {totals.get('cached_calls', 0)} served from the shared "
        f"cache, {totals.get('calls_needed', 0)} needed by the runs on their own. Extractors trained: "
        f"{totals.get('trainings', 0)} for {totals.get('runs', 0)} runs (runs with identical inputs share one).",
        *(
            [
                "",
                "**Posts without knowledge** (their build failed; see each run's knowledge_failures.json): "
                + "; ".join(failed),
            ]
            if failed
            else []
        ),
        "",
        "![F1 per cell](f1_by_cell.png)",
        "",
        "![F1 against LLM calls](f1_vs_calls.png)",
        "",
    ]
    paths = {"markdown": out / "leaderboard.md", "json": out / "leaderboard.json"}
    paths["markdown"].write_text("\n".join(lines), encoding="utf-8")
    board = {
        "grid": grid.model_dump(mode="json"),
        "totals": totals,
        "cells": [c.model_dump(mode="json") | {"rank": i} for i, c in enumerate(ranked, start=1)],
    }
    paths["json"].write_text(json.dumps(board, indent=2) + "\n", encoding="utf-8")
    paths.update(_plots(ranked, out))
    return paths


def _num(figure: Figure | None) -> str:
    return "n/a" if figure is None else f"{figure.mean:.1f}"


def _plots(cells: Sequence[CellSummary], out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c.name for c in cells]
    means = [100 * c.f1["paper_micro_f1"].mean for c in cells]
    stds = [100 * c.f1["paper_micro_f1"].std for c in cells]
    figure, axis = plt.subplots(figsize=(8, 0.45 * len(cells) + 1.5))
    axis.barh(range(len(cells)), means, xerr=stds, capsize=3, color="#4c72b0")
    axis.set_yticks(range(len(cells)), names, fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel("paper micro-F1 (%), mean ± std over seeds")
    figure.tight_layout()
    paths = {"f1_by_cell": out / "f1_by_cell.png"}
    figure.savefig(paths["f1_by_cell"], dpi=120)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(7, 4.5))
    points: dict[tuple[float, float, float], list[str]] = {}
    for cell, mean, std in zip(cells, means, stds, strict=True):
        points.setdefault((round(cell.calls_needed, 3), round(mean, 6), round(std, 6)), []).append(cell.name)
    for (calls, mean, std), group in points.items():  # cells on one point share a marker and a label
        axis.errorbar(calls, mean, yerr=std, fmt="o", capsize=3)
        axis.annotate("\n".join(group), (calls, mean), fontsize=7, xytext=(4, 4), textcoords="offset points")
    axis.margins(x=0.3)  # room for the labels
    cost = sum(c.cost for c in cells)
    axis.set_xlabel("LLM calls per run" + (f" (total cost {cost:.4f})" if cost else ""))
    axis.set_ylabel("paper micro-F1 (%)")
    figure.tight_layout()
    paths["f1_vs_calls"] = out / "f1_vs_calls.png"
    figure.savefig(paths["f1_vs_calls"], dpi=120)
    plt.close(figure)
    return paths
