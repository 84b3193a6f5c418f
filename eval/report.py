"""Evaluating files and writing what was found: JSON, a Markdown report, PNG plots.

One run is a gold KECPM file and a predictions file (``kecpm.predictions`` format); several runs
(one per seed) are summarised as mean +- std.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import BaseModel

from ..errors import DataError, Problem
from ..labels import RELATIONS
from ..post_files import read_kecpm
from ..predictions import PredictionRecord, read_predictions, read_predictions_lenient
from ..records import Post
from .matching import Match, Mode, count_matches
from .metrics import METRICS, EvaluationResult, result_from_counts
from .stats import MeanStd, bootstrap_ci, mean_std, summarize_seeds

__all__ = ["EvaluationReport", "RunReport", "evaluate_files", "load_run", "plot_report", "write_report"]

INTERVAL_METRICS = ("micro_f1", "macro_f1")


class RunReport(BaseModel):
    """One gold/predictions pair: its scores, what could not be read, its bootstrap intervals."""

    gold: str
    pred: str
    result: EvaluationResult
    unreadable: list[str]
    intervals: dict[str, tuple[float, float]]

    @property
    def invalid(self) -> list[str]:
        """The invalid bucket: unreadable lines or quintuples, then unknown labels."""
        return self.unreadable + self.result.invalid


class EvaluationReport(BaseModel):
    """Every run of one evaluation and their mean +- std."""

    mode: Mode
    directed: bool
    match: Match
    confidence: float
    n_resamples: int
    runs: list[RunReport]
    summary: dict[str, MeanStd]


def load_run(
    gold_path: str | Path, pred_path: str | Path, *, lenient: bool = False
) -> tuple[list[Post], list[PredictionRecord], list[Problem]]:
    """Gold posts, prediction records and (lenient only) the problems of unreadable lines.

    The record counts must agree and each prediction's ``img_id``, when given, must be its gold
    record's: misaligned files are an error even when lenient, since no score would mean anything.
    """
    gold = read_kecpm(gold_path)
    if lenient:
        records, problems = read_predictions_lenient(pred_path)
    else:
        records, problems = read_predictions(pred_path), []
    if len(records) != len(gold):
        if len(records) > len(gold):
            where = f"line {records[len(gold)].line} is record {len(gold) + 1}"
        else:
            where = f"the file ends after {len(records)} records"
        raise DataError(
            Problem(f"{len(records)} prediction records, but the gold has {len(gold)} ({where})", source=pred_path)
        )
    misaligned = [
        Problem(f"img_id {record.img_id!r} is not gold record {index}'s", source=pred_path, line=record.line)
        for index, (post, record) in enumerate(zip(gold, records, strict=True))
        if record.img_id is not None and record.img_id not in (post.img_id, post.id)
    ]
    if misaligned:
        raise DataError(misaligned)
    return gold, records, problems


def evaluate_files(
    gold_paths: Sequence[str | Path],
    pred_paths: Sequence[str | Path],
    *,
    mode: Mode = "paper",
    labels: Iterable[str] | None = None,
    directed: bool = True,
    match: Match = "surface",
    lenient: bool = False,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> EvaluationReport:
    """Score each gold/predictions pair (one per seed) and summarise them.

    Raises DataError naming the file and line of every problem (unless ``lenient``, see
    :func:`kecpm.eval.evaluate`). ``n_resamples=0`` skips the bootstrap.

    >>> report = evaluate_files(["seed_17/val.json"], ["run17/predictions.jsonl"])  # doctest: +SKIP
    >>> report.summary["micro_f1"].mean  # doctest: +SKIP
    """
    if len(gold_paths) != len(pred_paths) or not gold_paths:
        raise ValueError(f"give one gold file per predictions file ({len(gold_paths)} gold, {len(pred_paths)} pred)")
    labels = list(labels) if labels is not None else None
    runs = []
    for gold_path, pred_path in zip(gold_paths, pred_paths, strict=True):
        gold, records, unreadable = load_run(gold_path, pred_path, lenient=lenient)
        options = {"mode": mode, "directed": directed, "match": match, "lenient": lenient}
        try:
            counts = count_matches(gold, records, **options)
        except DataError as error:
            for problem in error.problems:
                problem.source = problem.source or str(pred_path if problem.line else gold_path)
            raise DataError(error.problems) from None
        for problem in counts.invalid:
            problem.source = str(pred_path)
        intervals = {}
        if n_resamples:
            for name in INTERVAL_METRICS:
                intervals[name] = bootstrap_ci(
                    gold,
                    records,
                    metric=name,
                    labels=labels,
                    n_resamples=n_resamples,
                    confidence=confidence,
                    seed=seed,
                    **options,
                )
        runs.append(
            RunReport(
                gold=str(gold_path),
                pred=str(pred_path),
                result=result_from_counts(counts, mode=mode, labels=labels, directed=directed, match=match),
                unreadable=[str(p) for p in unreadable],
                intervals=intervals,
            )
        )
    return EvaluationReport(
        mode=mode,
        directed=directed,
        match=match,
        confidence=confidence,
        n_resamples=n_resamples,
        runs=runs,
        summary=summarize_seeds([run.result for run in runs]),
    )


def _percent(value: float) -> str:
    return f"{100 * value:.2f}"


def _mean_relation_rows(report: EvaluationReport) -> list[tuple[str, int, float, float, float, float]]:
    """(relation, total support, mean P, mean R, mean F1, std F1) over runs."""
    rows = []
    for relation in RELATIONS:
        scores = [run.result.per_relation[relation.value] for run in report.runs]
        f1, f1_std = mean_std([s.f1 for s in scores])
        rows.append(
            (
                relation.value,
                sum(s.support for s in scores),
                sum(s.precision for s in scores) / len(scores),
                sum(s.recall for s in scores) / len(scores),
                f1,
                f1_std,
            )
        )
    return rows


def _markdown(report: EvaluationReport, plots: dict[str, Path]) -> str:
    runs = report.runs
    lines = [
        f"# kecpm evaluation ({report.mode} mode)",
        "",
        f"Matching: {'directed' if report.directed else 'undirected'}, by {report.match}. "
        f"{len(runs)} run(s). Scores in %; mean +- sample std over runs.",
    ]
    if report.mode == "paper":
        lines.append(
            "Paper mode: macro is the mean over all 21 relations, a relation absent from both gold and "
            "predictions counting 0."
        )
    else:
        lines.append(f"Macro over: {', '.join(runs[0].result.labels)}.")
    lines += ["", "## Scores", ""]
    header = ["metric", *[f"run {i + 1}" for i in range(len(runs))], "mean +- std"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in METRICS:
        figure = report.summary[name]
        cells = [_percent(v) for v in figure.values]
        lines.append(f"| {name} | {' | '.join(cells)} | {_percent(figure.mean)} +- {_percent(figure.std)} |")
    lines += ["", "## Runs", ""]
    interval = f"{round(report.confidence * 100)} % CI"
    lines += [
        f"| run | gold | predictions | records | invalid | micro F1 {interval} | macro F1 {interval} |",
        "|---|---|---|---|---|---|---|",
    ]
    for number, run in enumerate(runs, start=1):
        cis = [
            f"[{_percent(run.intervals[m][0])}, {_percent(run.intervals[m][1])}]" if m in run.intervals else "-"
            for m in INTERVAL_METRICS
        ]
        lines.append(
            f"| {number} | {run.gold} | {run.pred} | {run.result.n_records} | {len(run.invalid)} | "
            f"{cis[0]} | {cis[1]} |"
        )
    lines += ["", "## Per relation (mean over runs; support summed)", ""]
    lines += ["| relation | support | P | R | F1 |", "|---|---|---|---|---|"]
    for relation, support, precision, recall, f1, f1_std in _mean_relation_rows(report):
        f1_text = _percent(f1) + (f" +- {_percent(f1_std)}" if len(runs) > 1 else "")
        lines.append(f"| {relation} | {support} | {_percent(precision)} | {_percent(recall)} | {f1_text} |")
    lines += ["", "## Sub-tasks (mean over runs)", ""]
    for name, label in (("entity_f1", "entity F1 (name + type)"), ("pair_relation_f1", "pair + relation F1")):
        lines.append(f"- {label}: {_percent(report.summary[name].mean)} +- {_percent(report.summary[name].std)}")
    lines += ["", "## Invalid predictions", ""]
    total = sum(len(run.invalid) for run in runs)
    if not total:
        lines.append("None.")
    else:
        lines.append(f"{total} invalid (each counted as a false positive, or lost with its unreadable line):")
        lines.append("")
        for run in runs:
            lines += [f"- {problem}" for problem in run.invalid[:50]]
            if len(run.invalid) > 50:
                lines.append(f"- ... and {len(run.invalid) - 50} more in {run.pred}")
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({path.name})" for name, path in plots.items()]
    return "\n".join(lines) + "\n"


def plot_report(report: EvaluationReport, out_dir: str | Path) -> dict[str, Path]:
    """Write ``relation_f1.png`` (per-relation F1 bars) and ``relation_confusion.png`` (heat map)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = _mean_relation_rows(report)
    names = [row[0] for row in rows]
    f1 = [100 * row[4] for row in rows]
    spread = [100 * row[5] for row in rows]
    figure, axes = plt.subplots(figsize=(8, 7.5), layout="constrained")
    positions = np.arange(len(names))
    axes.barh(positions, f1, xerr=spread if len(report.runs) > 1 else None, color="#4c72b0", capsize=3)
    for position, value, row in zip(positions, f1, rows, strict=True):
        axes.text(value + 1, position, f"{value:.1f} (n={row[1]})", va="center", fontsize=8)
    axes.set_yticks(positions, names)
    axes.invert_yaxis()
    axes.set_xlim(0, 115)
    axes.set_xlabel("F1 (%)")
    micro, macro = report.summary["micro_f1"], report.summary["macro_f1"]
    axes.axvline(100 * macro.mean, color="#c44e52", linestyle="--", label=f"macro F1 {100 * macro.mean:.2f}")
    axes.axvline(100 * micro.mean, color="#55a868", linestyle=":", label=f"micro F1 {100 * micro.mean:.2f}")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=2, frameon=False)
    axes.set_title(f"Per-relation F1, {report.mode} mode, {len(report.runs)} run(s)")
    paths = {"per-relation F1": out_dir / "relation_f1.png"}
    figure.savefig(paths["per-relation F1"], dpi=110)
    plt.close(figure)

    matrix = np.sum([np.array(run.result.confusion) for run in report.runs], axis=0)
    figure, axes = plt.subplots(figsize=(9, 8), layout="constrained")
    image = axes.imshow(np.log1p(matrix), cmap="Blues")
    for (row, column), value in np.ndenumerate(matrix):
        if value:
            colour = "white" if np.log1p(value) > np.log1p(matrix.max()) / 2 else "black"
            axes.text(column, row, str(value), ha="center", va="center", fontsize=7, color=colour)
    axes.set_xticks(positions, names, rotation=90)
    axes.set_yticks(positions, names)
    axes.set_xlabel("predicted relation")
    axes.set_ylabel("gold relation")
    axes.set_title(f"Relations of matched entity pairs ({int(np.trace(matrix))} of {int(matrix.sum())} agree)")
    figure.colorbar(image, ax=axes, label="log(1 + count)", shrink=0.7)
    paths["relation confusion"] = out_dir / "relation_confusion.png"
    figure.savefig(paths["relation confusion"], dpi=110)
    plt.close(figure)
    return paths


def write_report(report: EvaluationReport, out_dir: str | Path, *, plots: bool = True) -> dict[str, Path]:
    """Write ``scores.json``, ``report.md`` and (unless ``plots=False``) the PNG plots into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pictures = plot_report(report, out_dir) if plots else {}
    data = report.model_dump(mode="json")
    for run, dumped in zip(report.runs, data["runs"], strict=True):
        dumped["invalid"] = run.invalid
    written = {"scores": out_dir / "scores.json", "report": out_dir / "report.md", **pictures}
    written["scores"].write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    written["report"].write_text(_markdown(report, pictures), encoding="utf-8")
    return written
