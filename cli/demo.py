"""``kecpm demo``: the main job on the embedded defaults, on a synthetic sample or the user's data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._output import console, print_table


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = Path("runs/demo"),
    size: Annotated[int, typer.Option(help="Synthetic posts in the full set the few-shot split is drawn from.")] = 840,
    ratio: Annotated[float, typer.Option(help="Few-shot share of each relation.")] = 0.07,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 17,
) -> None:
    """Write a synthetic JMERE sample, validate it, and build a distribution-fitted few-shot split."""
    from ..fewshot import build_few_shot, distribution_report
    from ..jmere import validate_kecpm, write_kecpm
    from ..synthetic import synthetic_posts

    full = synthetic_posts(size, seed=seed)
    source = write_kecpm(full, out / "data" / "full_ofa_image_caption.json")
    problems = validate_kecpm(source)
    sample = build_few_shot(full, ratio=ratio, seed=seed)
    split = write_kecpm(sample, out / "data" / "train_ofa_image_caption.json")
    report = distribution_report(sample, full)
    (out / "fewshot_report.md").write_text(report.to_markdown("Synthetic few-shot build"), encoding="utf-8")
    print_table(
        "synthetic sample",
        ["file", "records", "quintuples", "problems"],
        [
            (source, len(full), sum(len(p.quintuples) for p in full), len(problems)),
            (split, report.records, report.quintuples, "-"),
        ],
    )
    console.print(
        f"Jensen-Shannon divergence of the few-shot split to the full set: relations "
        f"{report.relation_divergence:.5f}, entity types {report.type_divergence:.5f}"
    )
    console.print(f"report: {out / 'fewshot_report.md'}")
