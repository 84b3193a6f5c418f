"""``kecpm data``: statistics, validation and few-shot builds of JMERE data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ._output import console, err_console, print_table

if TYPE_CHECKING:
    from ..records import Post

data_app = typer.Typer(help="Inspect, validate and sample JMERE / KECPM / MNRE data.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


@data_app.command("stats")
def stats(
    path: Annotated[Path, typer.Argument(help="A KECPM file (.json array or JSON Lines) or an MNRE v2 .txt file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Records, quintuples, and counts per relation and entity type."""
    from ..fewshot import relation_counts, type_counts

    posts = _read_or_exit(path)
    relations = relation_counts(posts)
    types = type_counts(posts)
    summary = {
        "path": str(path),
        "records": len(posts),
        "quintuples": sum(relations.values()),
        "relations": dict(sorted(relations.items(), key=lambda kv: (-kv[1], kv[0]))),
        "entity_types": dict(sorted(types.items(), key=lambda kv: (-kv[1], kv[0]))),
        "mean_tokens": round(sum(len(p.tokens) for p in posts) / max(len(posts), 1), 2),
        "with_image_description": sum(1 for p in posts if p.image_descriptions),
        "with_knowledge": sum(1 for p in posts if p.knowledge),
    }
    if as_json:
        console.print_json(json.dumps(summary))
        return
    console.print(
        f"[bold]{path}[/bold]: {summary['records']} records, {summary['quintuples']} quintuples, "
        f"{summary['mean_tokens']} tokens per record on average; "
        f"{summary['with_image_description']} with an image description, {summary['with_knowledge']} with knowledge"
    )
    print_table("quintuples per relation", ["relation", "count"], list(summary["relations"].items()))
    print_table("entities per type", ["type", "count"], list(summary["entity_types"].items()))


@data_app.command("validate")
def validate(
    paths: Annotated[list[Path], typer.Argument(help="KECPM or MNRE files to check.")],
) -> None:
    """List every problem in the files (not only the first); exit 1 when there is any."""
    from ..post_files import validate_posts

    total = 0
    for path in paths:
        try:
            problems = validate_posts(path)
        except FileNotFoundError as exc:
            err_console.print(f"[red]{exc}[/red]")
            total += 1
            continue
        for problem in problems:
            console.print(str(problem), markup=False, highlight=False)
        total += len(problems)
        if not problems:
            console.print(f"{path}: valid", markup=False)
    if total:
        err_console.print(f"{total} problem(s)")
        raise typer.Exit(1)


@data_app.command("fewshot")
def fewshot(
    source: Annotated[Path, typer.Argument(help="The full labelled set: a KECPM file or an MNRE v2 .txt file.")],
    out: Annotated[Path, typer.Option(help="Output folder: train.json, report.md, report.json.")],
    ratio: Annotated[float | None, typer.Option(help="Share of each relation's quintuples, e.g. 0.07.")] = None,
    k: Annotated[int | None, typer.Option(help="Quintuples per relation (instead of --ratio).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same split.")] = 0,
    name: Annotated[str, typer.Option(help="File name of the split written into --out.")] = "train.json",
    compare: Annotated[
        list[Path] | None,
        typer.Option(help="Other samples of the same source (e.g. released splits) to report side by side."),
    ] = None,
) -> None:
    """Build a few-shot split stratified by relation and report how well it fits the source."""
    from ..fewshot import build_few_shot, distribution_report
    from ..post_files import write_kecpm

    posts = _read_or_exit(source)
    try:
        sample = build_few_shot(posts, ratio=ratio, k=k, seed=seed)
    except ValueError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    report = distribution_report(sample, posts)
    out.mkdir(parents=True, exist_ok=True)
    write_kecpm(sample, out / name)
    rows = [("this build", report.records, report.quintuples, report.relation_divergence, report.type_divergence)]
    compared = {}
    for other_path in compare or []:
        other = distribution_report(_read_or_exit(other_path), posts)
        compared[str(other_path)] = other.model_dump()
        rows.append(
            (str(other_path), other.records, other.quintuples, other.relation_divergence, other.type_divergence)
        )
    markdown = report.to_markdown(f"Few-shot build of {source.name} (seed {seed})")
    markdown += "\n## Divergence to the source\n\n| sample | records | quintuples | JS relations | JS types |\n"
    markdown += "|---|---:|---:|---:|---:|\n"
    markdown += "".join(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.5f} | {r[4]:.5f} |\n" for r in rows)
    (out / "report.md").write_text(markdown, encoding="utf-8")
    (out / "report.json").write_text(
        json.dumps(
            {
                "source": str(source),
                "seed": seed,
                "ratio": ratio,
                "k": k,
                "build": report.model_dump(),
                "compared": compared,
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    print_table(
        "Jensen-Shannon divergence to the source (lower is closer)",
        ["sample", "records", "quintuples", "relations", "entity types"],
        [(r[0], r[1], r[2], f"{r[3]:.5f}", f"{r[4]:.5f}") for r in rows],
    )
    console.print(f"wrote {out / name}, {out / 'report.md'}, {out / 'report.json'}")


def _read_or_exit(path: Path) -> list[Post]:
    from ..errors import DataError
    from ..post_files import read_posts

    try:
        return read_posts(path)
    except FileNotFoundError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    except DataError as exc:
        for problem in exc.problems:
            err_console.print(str(problem), markup=False, highlight=False)
        err_console.print(f"[red]{len(exc.problems)} problem(s); run `kecpm data validate {path}`[/red]")
        raise typer.Exit(1) from None
