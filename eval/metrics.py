"""Metric functions shaped like scikit-learn's: ``metric(y_true, y_pred, *, options)``.

``y_true``: one gold record per post, a :class:`~kecpm.records.Post` or a list of quintuples.
``y_pred``: one record per post, in the same order: a list of quintuples
(:class:`~kecpm.records.Quintuple`, :class:`~kecpm.predictions.PredictedQuintuple`, a dict in the
predictions format, or a ``(head, head_type, tail, tail_type, relation)`` tuple) or a
:class:`~kecpm.predictions.PredictionRecord`. Scores are fractions in ``[0, 1]``.

Modes (see :mod:`kecpm.eval.matching` for the matching rules):

- ``"paper"``: the KECPM release's scores. Micro P/R/F1 over directed quintuples; macro P, R and F1
  are the unweighted means of the per-relation P, R and F1 over the fixed list of 21 relations, a
  relation with neither gold nor prediction counting 0 (so the macro of a set holding k relations
  cannot pass k/21).
- ``"standard"``: set matching per record; macro over the relations present in the gold, or over
  ``labels``; ``directed=False`` matches a quintuple whichever way round its entities are;
  ``match="span"`` identifies entities by token span instead of name.

A score with an empty denominator is 0 (the release's rule, and scikit-learn's ``zero_division=0``).
The sub-task scores (entity F1, pair+relation F1) and the relation confusion are not the release's:
they compare normalised fields as sets per record in both modes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, get_args

import numpy as np
from pydantic import BaseModel

from ..labels import RELATIONS, parse_relation
from ..records import Post, Quintuple
from .matching import CORRECT, GOLD, PREDICTED, Counts, Match, Mode, count_matches

__all__ = [
    "METRICS",
    "PRF",
    "EvaluationResult",
    "entity_f1",
    "evaluate",
    "label_columns",
    "macro_f1",
    "make_scorer",
    "metric_from_counts",
    "micro_f1",
    "pair_relation_f1",
    "per_relation_scores",
    "precision_recall_f1",
    "relation_confusion",
    "result_from_counts",
]

Metric = Literal[
    "micro_precision",
    "micro_recall",
    "micro_f1",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "entity_f1",
    "pair_relation_f1",
]
METRICS: tuple[str, ...] = get_args(Metric)


class PRF(BaseModel):
    """Precision, recall and F1 with the counts they come from (``support`` = gold count)."""

    precision: float
    recall: float
    f1: float
    correct: int
    predicted: int
    support: int

    @classmethod
    def from_counts(cls, correct: int, predicted: int, support: int) -> PRF:
        correct, predicted, support = int(correct), int(predicted), int(support)
        precision = correct / predicted if predicted else 0.0
        recall = correct / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return cls(precision=precision, recall=recall, f1=f1, correct=correct, predicted=predicted, support=support)


class EvaluationResult(BaseModel):
    """Every score of one set of predictions against its gold.

    ``per_relation`` holds all 21 relations in the release's order; ``labels`` are those the macro
    averages over. ``confusion[g][p]`` counts matched entity pairs with gold relation ``g`` and
    predicted relation ``p`` (indices into ``relations``). ``invalid`` lists the predictions that
    could not be judged (lenient scoring), each counted as a false positive.
    """

    mode: Mode
    directed: bool
    match: Match
    n_records: int
    micro: PRF
    macro_precision: float
    macro_recall: float
    macro_f1: float
    labels: list[str]
    per_relation: dict[str, PRF]
    entity: PRF
    pair_relation: PRF
    relations: list[str]
    confusion: list[list[int]]
    invalid: list[str]

    def metric(self, name: Metric) -> float:
        """One headline figure by name (one of ``METRICS``)."""
        if name.startswith("micro_"):
            return getattr(self.micro, name.removeprefix("micro_"))
        if name == "entity_f1":
            return self.entity.f1
        if name == "pair_relation_f1":
            return self.pair_relation.f1
        return getattr(self, name)


def label_columns(mode: Mode, labels: Iterable[str] | None) -> list[int] | None:
    """The relation columns a macro averages over: all 21 (paper), ``labels``, or None for "those
    present in the gold" (standard mode), resolved by :func:`metric_from_counts` on the counts it gets."""
    if mode == "paper":
        if labels is not None:
            raise ValueError("paper mode averages over the fixed 21 relations; labels= is for mode='standard'")
        return list(range(len(RELATIONS)))
    if labels is not None:
        return [RELATIONS.index(parse_relation(label)) for label in labels]
    return None


def _present_columns(macro_totals: np.ndarray) -> list[int]:
    return [column for column in range(len(RELATIONS)) if macro_totals[column, GOLD] > 0]


def _per_relation(macro_totals: np.ndarray) -> list[PRF]:
    return [PRF.from_counts(*macro_totals[column]) for column in range(len(RELATIONS))]


def metric_from_counts(
    metric: Metric,
    micro_totals: np.ndarray,
    macro_totals: np.ndarray,
    entity_totals: np.ndarray,
    pair_totals: np.ndarray,
    columns: Sequence[int] | None,
) -> float:
    """One metric from summed counts (the shapes of :class:`Counts` without the record axis).

    The building block of :func:`evaluate` and of the bootstrap, which sums resampled records.
    """
    if metric.startswith("micro_"):
        total = micro_totals.sum(axis=0)
        return getattr(PRF.from_counts(total[CORRECT], total[PREDICTED], total[GOLD]), metric.removeprefix("micro_"))
    if metric.startswith("macro_"):
        if columns is None:
            columns = _present_columns(macro_totals)
        if not columns:
            return 0.0
        rows = _per_relation(macro_totals)
        attribute = metric.removeprefix("macro_")
        # A plain left-to-right sum, as the release does: Python's sum() compensates rounding since
        # 3.12, which could change the last digit.
        total = 0.0
        for column in columns:
            total += getattr(rows[column], attribute)
        return total / len(columns)
    if metric == "entity_f1":
        return PRF.from_counts(*entity_totals).f1
    if metric == "pair_relation_f1":
        return PRF.from_counts(*pair_totals).f1
    raise ValueError(f"unknown metric {metric!r} (known: {', '.join(METRICS)})")


def evaluate(
    y_true: Sequence[Any],
    y_pred: Sequence[Any],
    *,
    mode: Mode = "paper",
    labels: Iterable[str] | None = None,
    directed: bool = True,
    match: Match = "surface",
    lenient: bool = False,
) -> EvaluationResult:
    """All scores at once: micro, macro, per relation, entity, pair+relation, relation confusion.

    >>> gold = [[("Ann", "per", "Bo", "per", "couple")], [("Ann", "per", "Oslo", "loc", "place_of_birth")]]
    >>> pred = [[("Ann", "per", "Bo", "per", "couple")], [("Oslo", "loc", "Ann", "per", "place_of_birth")]]
    >>> result = evaluate(gold, pred)
    >>> result.micro.f1, round(result.macro_f1, 4), result.entity.f1
    (0.5, 0.0476, 1.0)
    >>> evaluate(gold, pred, mode="standard", directed=False).micro.f1
    1.0
    """
    counts = count_matches(y_true, y_pred, mode=mode, directed=directed, match=match, lenient=lenient)
    return result_from_counts(counts, mode=mode, labels=labels, directed=directed, match=match)


def result_from_counts(
    counts: Counts, *, mode: Mode, labels: Iterable[str] | None, directed: bool, match: Match
) -> EvaluationResult:
    """The :class:`EvaluationResult` of counts made by :func:`~kecpm.eval.matching.count_matches`."""
    micro_totals = counts.micro.sum(axis=0)
    macro_totals = counts.macro.sum(axis=0)
    columns = label_columns(mode, labels)
    if columns is None:
        columns = _present_columns(macro_totals)
    entity_totals = counts.entity.sum(axis=0)
    pair_totals = counts.pair.sum(axis=0)
    micro_total = micro_totals.sum(axis=0)

    def figure(name: Metric) -> float:
        return metric_from_counts(name, micro_totals, macro_totals, entity_totals, pair_totals, columns)

    return EvaluationResult(
        mode=mode,
        directed=directed,
        match=match,
        n_records=counts.n_records,
        micro=PRF.from_counts(micro_total[CORRECT], micro_total[PREDICTED], micro_total[GOLD]),
        macro_precision=figure("macro_precision"),
        macro_recall=figure("macro_recall"),
        macro_f1=figure("macro_f1"),
        labels=[RELATIONS[c].value for c in columns],
        per_relation={r.value: row for r, row in zip(RELATIONS, _per_relation(macro_totals), strict=True)},
        entity=PRF.from_counts(*entity_totals),
        pair_relation=PRF.from_counts(*pair_totals),
        relations=[r.value for r in RELATIONS],
        confusion=counts.confusion.tolist(),
        invalid=[str(p) for p in counts.invalid],
    )


def precision_recall_f1(
    y_true: Sequence[Any],
    y_pred: Sequence[Any],
    *,
    average: Literal["micro", "macro"] = "micro",
    mode: Mode = "paper",
    labels: Iterable[str] | None = None,
    directed: bool = True,
    match: Match = "surface",
    lenient: bool = False,
) -> tuple[float, float, float]:
    """``(precision, recall, f1)``, micro or macro averaged.

    >>> gold = [[("Ann", "per", "Bo", "per", "couple")]]
    >>> precision_recall_f1(gold, [[("Ann", "per", "Bo", "per", "couple"), ("Bo", "per", "Ann", "per", "couple")]])
    (0.5, 1.0, 0.6666666666666666)
    >>> precision_recall_f1(gold, [[("Ann", "per", "Bo", "per", "couple")]], average="macro", mode="standard")
    (1.0, 1.0, 1.0)
    """
    result = evaluate(y_true, y_pred, mode=mode, labels=labels, directed=directed, match=match, lenient=lenient)
    if average == "micro":
        return result.micro.precision, result.micro.recall, result.micro.f1
    if average == "macro":
        return result.macro_precision, result.macro_recall, result.macro_f1
    raise ValueError(f"average must be 'micro' or 'macro', not {average!r}")


def micro_f1(y_true: Sequence[Any], y_pred: Sequence[Any], *, mode: Mode = "paper", **options: Any) -> float:
    """Micro-averaged quintuple F1 (options as :func:`evaluate`).

    >>> micro_f1([[("Ann", "per", "Bo", "per", "couple")]], [[("Ann", "per", "Bo", "per", "couple")]])
    1.0
    """
    return evaluate(y_true, y_pred, mode=mode, **options).micro.f1


def macro_f1(y_true: Sequence[Any], y_pred: Sequence[Any], *, mode: Mode = "paper", **options: Any) -> float:
    """Macro F1: the mean of per-relation F1 (over 21 relations in paper mode, see the module doc).

    >>> gold = [[("Ann", "per", "Bo", "per", "couple")]]
    >>> macro_f1(gold, gold) == 1 / 21, macro_f1(gold, gold, mode="standard")
    (True, 1.0)
    """
    return evaluate(y_true, y_pred, mode=mode, **options).macro_f1


def per_relation_scores(
    y_true: Sequence[Any], y_pred: Sequence[Any], *, mode: Mode = "paper", **options: Any
) -> dict[str, PRF]:
    """P/R/F1 and support of each of the 21 relations, in the release's order.

    >>> gold = [[("Ann", "per", "Bo", "per", "couple")]]
    >>> per_relation_scores(gold, [[("Ann", "per", "Bo", "per", "parent")]])["couple"].support
    1
    """
    return evaluate(y_true, y_pred, mode=mode, **options).per_relation


def entity_f1(y_true: Sequence[Any], y_pred: Sequence[Any], *, match: Match = "surface", **options: Any) -> float:
    """F1 of the entities (name and type; span and type with ``match="span"``) that the quintuples mention.

    >>> entity_f1([[("Ann", "per", "Bo", "per", "couple")]], [[("Ann", "per", "Bo", "org", "couple")]])
    0.5
    """
    return evaluate(y_true, y_pred, mode="standard", match=match, **options).entity.f1


def pair_relation_f1(y_true: Sequence[Any], y_pred: Sequence[Any], *, directed: bool = True, **options: Any) -> float:
    """F1 of (head, tail, relation), entity types ignored.

    >>> pair_relation_f1([[("Ann", "per", "Bo", "per", "couple")]], [[("Ann", "org", "Bo", "loc", "couple")]])
    1.0
    """
    return evaluate(y_true, y_pred, mode="standard", directed=directed, **options).pair_relation.f1


def relation_confusion(
    y_true: Sequence[Any], y_pred: Sequence[Any], *, directed: bool = True, **options: Any
) -> list[list[int]]:
    """21 x 21 counts of gold relation (rows) against predicted relation (columns), over entity pairs
    (names and types) that both the gold and the prediction relate; ``RELATIONS`` order.

    >>> matrix = relation_confusion([[("Ann", "per", "Bo", "per", "couple")]], [[("Ann", "per", "Bo", "per", "peer")]])
    >>> matrix[2][4]  # couple (row 2) predicted as peer (column 4)
    1
    """
    return evaluate(y_true, y_pred, mode="standard", directed=directed, **options).confusion


def make_scorer(
    mode: Mode = "paper", metric: Metric = "micro_f1", **options: Any
) -> Callable[[Sequence[Post], Sequence[Sequence[Quintuple]]], float]:
    """A scorer for model selection: ``scorer(gold_posts, predicted_quintuples) -> float`` in ``[0, 1]``.

    Made for dependency injection: a trainer that may not import ``kecpm.eval`` receives this callable.
    ``options`` are those of :func:`evaluate` (``labels``, ``directed``, ``match``, ``lenient``).

    >>> scorer = make_scorer(mode="paper", metric="micro_f1")
    >>> from kecpm.synthetic import synthetic_posts
    >>> gold = synthetic_posts(3)
    >>> scorer(gold, [post.quintuples for post in gold])
    1.0
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r} (known: {', '.join(METRICS)})")
    if mode not in ("paper", "standard"):
        raise ValueError(f"mode must be 'paper' or 'standard', not {mode!r}")
    evaluate([], [], mode=mode, **options)  # refuse bad options now, not at the end of an epoch

    def scorer(y_true: Sequence[Post], y_pred: Sequence[Sequence[Quintuple]]) -> float:
        return evaluate(y_true, y_pred, mode=mode, **options).metric(metric)

    scorer.__name__ = f"{mode}_{metric}"
    scorer.__doc__ = f"{metric} in {mode} mode of predictions against gold posts, in [0, 1]."
    return scorer
