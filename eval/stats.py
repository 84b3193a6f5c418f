"""Spread of a score: mean +- std over seeds, and a bootstrap confidence interval over records."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

from .matching import Match, Mode, count_matches
from .metrics import METRICS, EvaluationResult, Metric, label_columns, metric_from_counts

__all__ = ["MeanStd", "bootstrap_ci", "mean_std", "summarize_seeds"]


class MeanStd(BaseModel):
    """A figure over seeds: its values, their mean and sample standard deviation."""

    mean: float
    std: float
    values: list[float]


def mean_std(values: Iterable[float], *, ddof: int = 1) -> tuple[float, float]:
    """Mean and standard deviation (sample, ``ddof=1``, by default); the std of one value is 0.

    >>> mean_std([0.5, 0.7, 0.6])
    (0.6, 0.09999999999999998)
    >>> mean_std([0.5])
    (0.5, 0.0)
    """
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std of no values")
    if len(values) <= ddof:
        return statistics.fmean(values), 0.0
    mean = statistics.fmean(values)
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - ddof)) ** 0.5


def summarize_seeds(results: Sequence[EvaluationResult], *, metrics: Sequence[str] = METRICS) -> dict[str, MeanStd]:
    """Mean +- std of each headline metric over runs (one per seed).

    >>> from kecpm.synthetic import synthetic_posts
    >>> from kecpm.eval import evaluate
    >>> runs = [evaluate(p, [x.quintuples for x in p]) for p in (synthetic_posts(21, seed=s) for s in (1, 2))]
    >>> summarize_seeds(runs)["micro_f1"].mean
    1.0
    """
    summary = {}
    for name in metrics:
        values = [result.metric(name) for result in results]
        mean, std = mean_std(values)
        summary[name] = MeanStd(mean=mean, std=std, values=values)
    return summary


def bootstrap_ci(
    y_true: Sequence[Any],
    y_pred: Sequence[Any],
    *,
    metric: Metric = "micro_f1",
    mode: Mode = "paper",
    labels: Iterable[str] | None = None,
    directed: bool = True,
    match: Match = "surface",
    lenient: bool = False,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a metric, resampling records with replacement (seeded).

    Each resample is scored as a set of its own: paper macro over the 21 relations, standard macro
    over the relations present in that resample's gold (or over ``labels``).

    >>> from kecpm.synthetic import synthetic_posts
    >>> gold = synthetic_posts(30, seed=3)
    >>> pred = [p.quintuples if i % 3 else [] for i, p in enumerate(gold)]
    >>> low, high = bootstrap_ci(gold, pred, metric="micro_f1", seed=0)
    >>> low < 0.8 < high
    True
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r} (known: {', '.join(METRICS)})")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    counts = count_matches(y_true, y_pred, mode=mode, directed=directed, match=match, lenient=lenient)
    n = counts.n_records
    if n == 0:
        raise ValueError("bootstrap over no records")
    columns = label_columns(mode, labels)
    rng = np.random.default_rng(seed)
    # Each resample is a vector of how often each record was drawn; totals are then one product.
    weights = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_resamples)])
    micro = weights @ counts.micro.reshape(n, -1)
    macro = weights @ counts.macro.reshape(n, -1)
    entity = weights @ counts.entity
    pair = weights @ counts.pair
    shape = counts.micro.shape[1:]
    values = [
        metric_from_counts(metric, micro[b].reshape(shape), macro[b].reshape(shape), entity[b], pair[b], columns)
        for b in range(n_resamples)
    ]
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)
