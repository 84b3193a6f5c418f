"""``kecpm experiment``: prompt-template grids with a leaderboard, their replay, and the diff of two cells.

kecpm experiment --grid examples/grid.toml --out runs/experiments/grid
kecpm experiment --replay runs/experiments/grid/manifest.json
kecpm experiment diff runs/experiments/grid "generate=v1 k=1 rounds=1" "generate=v2 k=1 rounds=1"
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._output import console, err_console, print_error, print_table
from ._spend import (
    EXIT_BUDGET,
    BudgetOption,
    BudgetTokensOption,
    DryRunOption,
    print_estimate,
    spend_guard,
    spend_limit,
)

experiment_app = typer.Typer(
    help="Run a grid of pipeline settings over seeds and rank the cells (see examples/grid.toml).",
    invoke_without_command=True,
    no_args_is_help=False,
)


def register(app: typer.Typer) -> None:
    app.add_typer(experiment_app, name="experiment")


def _progress(cell: str, seed: int, stage: str, status: str, seconds: float) -> None:
    if status == "done":
        console.print(f"[green]{cell}[/green] seed {seed}: {stage} done in {seconds:.1f} s", markup=True)
    elif status != "running":
        console.print(f"{cell} seed {seed}: {stage} {status}", markup=False)


@experiment_app.callback()
def experiment(
    ctx: typer.Context,
    grid: Annotated[Path | None, typer.Option("--grid", help="A grid file (.toml or .yaml).")] = None,
    replay: Annotated[
        Path | None, typer.Option("--replay", help="Rerun what an experiment (or one of its runs') manifest records.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for everything (default: runs/experiments/<name>; replay: <exp>/replay)."),
    ] = None,
    cell: Annotated[
        list[str] | None, typer.Option("--cell", help="Only this cell (name or folder); repeatable.")
    ] = None,
    seed: Annotated[list[int] | None, typer.Option("--seed", help="Only this seed; repeatable.")] = None,
    dry_run: DryRunOption = False,
    budget: BudgetOption = None,
    budget_tokens: BudgetTokensOption = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray", help="Run the cells x seeds as tasks on a Ray cluster: auto, local or HOST:PORT (kecpm[ray])."
        ),
    ] = None,
) -> None:
    """Run a grid (--grid) or replay one (--replay); `kecpm experiment diff` compares two cells.

    --dry-run says what the grid's knowledge stages would cost (calls shared by cells counted once);
    --budget/--budget-tokens hold the whole grid under one budget (exit code 4 when it stops it; the
    prices are the first cell's)."""
    if ctx.invoked_subcommand is not None:
        return
    from ..agents import BudgetStopped
    from ..errors import KecpmError
    from ..experiments import Grid, estimate_experiment, run_experiment
    from ..experiments import replay as replay_experiment

    if (grid is None) == (replay is None):
        err_console.print("[red]error:[/red] give exactly one of --grid FILE and --replay MANIFEST")
        raise typer.Exit(2)
    if replay is not None and (dry_run or budget is not None or budget_tokens is not None):
        err_console.print("[red]error:[/red] --dry-run and --budget go with --grid (a replay reuses the cache)")
        raise typer.Exit(2)
    try:
        if grid is not None:
            settings = Grid.from_file(grid)
            target = out or Path("runs/experiments") / settings.name
            if dry_run:
                print_estimate(
                    estimate_experiment(settings, target, cells=cell, seeds=seed, on_event=_progress), target
                )
                return
            first = settings.run_config(settings.cells()[0], settings.seeds[0], out=target, shared=target / "shared")
            guard = spend_guard(spend_limit(budget, budget_tokens) or first.pipeline.budget, first.pipeline.llm)
            result = run_experiment(settings, target, cells=cell, seeds=seed, on_event=_progress, spend=guard, ray=ray)
        else:
            assert replay is not None
            replayed = replay_experiment(replay, out=out, cells=cell, seeds=seed, on_event=_progress)
            result = replayed.experiment
    except BudgetStopped as exc:
        err_console.print(f"[yellow]stopped:[/yellow] {exc}")
        raise typer.Exit(EXIT_BUDGET) from None
    except (KecpmError, FileNotFoundError) as exc:
        print_error(exc)
        raise typer.Exit(1) from None
    ranked = sorted(result.cells, key=lambda c: -c.f1["paper_micro_f1"].mean)
    print_table(
        "leaderboard (paper micro-F1 %, mean ± std over seeds)",
        ["cell", "micro-F1", "LLM calls made", "from cache"],
        [
            (
                c.name,
                f"{100 * c.f1['paper_micro_f1'].mean:.1f} ± {100 * c.f1['paper_micro_f1'].std:.1f}",
                sum(r.llm_calls for r in c.runs),
                sum(r.cached_calls for r in c.runs),
            )
            for c in ranked
        ],
    )
    totals = result.totals
    console.print(
        f"LLM calls: {totals['llm_calls']} made, {totals['cached_calls']} from the cache, "
        f"{totals['calls_needed']} needed by the runs alone; {totals['trainings']} extractors trained for "
        f"{totals['runs']} runs; {result.seconds:.0f} s"
    )
    if replay is not None:
        difference = replayed.max_difference
        console.print(
            f"replayed {len(replayed.rows)} runs: largest score difference from the recorded ones {difference:.2g}"
        )
        if difference > 1e-9:
            raise typer.Exit(3)
    console.print(f"leaderboard: {result.leaderboard.get('markdown')}")
    console.print(f"manifest:    {result.manifest}")


@experiment_app.command("diff")
def diff(
    experiment_dir: Annotated[Path, typer.Argument(help="The experiment's folder (or its manifest.json).")],
    cell_a: Annotated[str, typer.Argument(help="A cell's name or folder name.")],
    cell_b: Annotated[str, typer.Argument(help="Another cell.")],
    post: Annotated[str | None, typer.Option("--post", help="A post id (default: the first evaluated post).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="The seed (default: the grid's first).")] = None,
) -> None:
    """The prompts and outputs of two cells for one post, as a unified diff."""
    from ..errors import KecpmError
    from ..experiments import diff_cells

    try:
        text = diff_cells(experiment_dir, cell_a, cell_b, post_id=post, seed=seed)
    except (KecpmError, FileNotFoundError) as exc:
        print_error(exc)
        raise typer.Exit(1) from None
    console.print(text, markup=False, highlight=False)
