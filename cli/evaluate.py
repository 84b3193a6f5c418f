"""``kecpm eval``: score predictions files against gold KECPM files, one pair per seed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register"]


def eval_command(
    gold: Annotated[
        list[Path], typer.Option("--gold", help="Gold KECPM file (e.g. seed_17/val.json); repeat once per seed.")
    ],
    pred: Annotated[
        list[Path], typer.Option("--pred", help="Predictions JSON Lines file, in the order of the --gold files.")
    ],
    mode: Annotated[
        str, typer.Option(help="paper: the KECPM release's rules (macro over all 21 relations); standard.")
    ] = "paper",
    out: Annotated[
        Path | None, typer.Option(help="Folder for scores.json, report.md and the PNG plots; omitted: print only.")
    ] = None,
    lenient: Annotated[
        bool, typer.Option(help="Count unreadable lines and unknown types/relations as invalid instead of failing.")
    ] = False,
    undirected: Annotated[bool, typer.Option(help="Standard mode: match quintuples either way round.")] = False,
    match: Annotated[str, typer.Option(help="Standard mode: identify entities by 'surface' name or token 'span'.")] = (
        "surface"
    ),
    labels: Annotated[
        str | None, typer.Option(help="Standard mode: comma-separated relations to macro-average over.")
    ] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for 95 % intervals; 0 skips them.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
) -> None:
    """Score predictions: micro/macro P/R/F1, per relation, sub-tasks, mean +- std over seeds."""
    from rich.console import Console
    from rich.table import Table

    from ..errors import DataError
    from ..eval import METRICS, evaluate_files, write_report

    console = Console()
    if mode not in ("paper", "standard"):
        raise typer.BadParameter("must be 'paper' or 'standard'", param_hint="--mode")
    if match not in ("surface", "span"):
        raise typer.BadParameter("must be 'surface' or 'span'", param_hint="--match")
    if len(gold) != len(pred):
        raise typer.BadParameter(f"{len(gold)} --gold for {len(pred)} --pred: give one gold file per predictions file")
    try:
        report = evaluate_files(
            gold,
            pred,
            mode=mode,  # type: ignore[arg-type]
            labels=[label.strip() for label in labels.split(",")] if labels else None,
            directed=not undirected,
            match=match,  # type: ignore[arg-type]
            lenient=lenient,
            n_resamples=bootstrap,
            seed=seed,
        )
    except DataError as error:
        console.print(f"[red]error:[/red] {len(error.problems)} problem(s) in the input", highlight=False)
        for problem in error.problems[:20]:
            console.print(f"  {problem}", highlight=False, markup=False, soft_wrap=True)
        if len(error.problems) > 20:
            console.print(f"  ... and {len(error.problems) - 20} more")
        if not lenient:
            console.print("(--lenient counts bad quintuples as invalid instead; misaligned files stay an error)")
        raise typer.Exit(code=2) from None
    except (ValueError, FileNotFoundError) as error:
        from ._output import print_error

        print_error(error, to=console)
        raise typer.Exit(code=2) from None

    runs = report.runs
    table = Table(title=f"kecpm eval ({report.mode} mode, %)")
    table.add_column("metric")
    for number in range(len(runs)):
        table.add_column(f"run {number + 1}", justify="right")
    table.add_column("mean +- std", justify="right")
    for name in METRICS:
        figure = report.summary[name]
        table.add_row(
            name, *[f"{100 * v:.2f}" for v in figure.values], f"{100 * figure.mean:.2f} +- {100 * figure.std:.2f}"
        )
    console.print(table)
    relations = Table(title="per relation (F1 %, support)")
    relations.add_column("relation")
    for number in range(len(runs)):
        relations.add_column(f"run {number + 1}", justify="right")
    for relation in runs[0].result.relations:
        cells = [f"{100 * row.f1:.1f} ({row.support})" for row in (run.result.per_relation[relation] for run in runs)]
        relations.add_row(relation, *cells)
    console.print(relations)
    for number, run in enumerate(runs, start=1):
        intervals = ", ".join(f"{k} [{100 * lo:.2f}, {100 * hi:.2f}]" for k, (lo, hi) in run.intervals.items())
        invalid = f"{len(run.invalid)} invalid" if run.invalid else "no invalid predictions"
        console.print(f"run {number}: {run.result.n_records} records, {invalid}; 95 % CI: {intervals or '-'}")
    if out is not None:
        written = write_report(report, out)
        console.print("wrote " + ", ".join(str(path) for path in written.values()), highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
