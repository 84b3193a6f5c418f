"""Split-val model selection: choose on one half of val, score on the other, both halves in turn.

Selecting an epoch or a threshold on the same val that is reported inflates the reported figure (the
best of many noisy scores is above their expectation). :func:`cross_select` picks, among candidate
predictions for the whole val set (one per epoch, threshold, ...), the best on each half by a scorer,
and pools the predictions of each half made with the candidate chosen on the *other* half: every
record is predicted by a choice made without it, and the pooled predictions are scored on all of val
like any others (so paper macro-F1 still sees all 21 relations).

>>> from kecpm.synthetic import synthetic_posts
>>> from kecpm.eval import cross_select, make_scorer, val_halves
>>> gold = synthetic_posts(20, seed=1)
>>> candidates = {"empty": [[] for _ in gold], "gold": [p.quintuples for p in gold]}
>>> chosen = cross_select(gold, candidates, make_scorer(), val_halves(len(gold), seed=0))
>>> chosen.choices
['gold', 'gold']
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel

__all__ = ["CrossSelection", "cross_select", "val_halves"]


def val_halves(n: int, seed: int) -> tuple[list[int], list[int]]:
    """The record indices ``0..n-1`` shuffled with ``seed`` and cut in two halves (each sorted; the
    first gets the odd record). The same ``n`` and ``seed`` always give the same halves.

    >>> val_halves(6, seed=0)
    ([1, 2, 4], [0, 3, 5])
    """
    if n < 2:
        raise ValueError(f"val_halves needs at least 2 records, got {n}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    cut = (n + 1) // 2
    return sorted(order[:cut]), sorted(order[cut:])


class CrossSelection(BaseModel):
    """What :func:`cross_select` chose: per half, the candidate chosen on it, its score there and the
    score of that choice on the other half; and the pooled predictions (each half predicted by the
    candidate chosen on the other)."""

    choices: list[Any]
    selected_scores: list[float]
    held_out_scores: list[float]
    predictions: list[Any]


Candidates = Mapping[Hashable, Sequence[Any]]
"""A choice (an epoch, a threshold pair...) -> predictions for every record of val, in order."""


def cross_select(
    gold: Sequence[Any],
    candidates: Candidates | tuple[Candidates, Candidates],
    scorer: Callable[[Sequence[Any], Sequence[Any]], float],
    halves: tuple[Sequence[int], Sequence[int]],
) -> CrossSelection:
    """Choose a candidate on each half of ``gold`` and predict the other half with it.

    ``candidates``: predictions for every record of ``gold`` per choice; or a pair of such mappings,
    the first chosen among on the first half and the second on the second (e.g. the predictions of
    the models whose epoch was selected on each half). ``scorer(gold, predictions)`` is higher for
    better (e.g. :func:`~kecpm.eval.make_scorer`). Ties go to the first candidate in the mapping's
    order (the earliest epoch, as early stopping does).
    """
    per_half = candidates if isinstance(candidates, tuple) else (candidates, candidates)
    n = len(gold)
    for mapping in per_half:
        if not mapping:
            raise ValueError("cross_select needs at least one candidate")
        for key, predicted in mapping.items():
            if len(predicted) != n:
                raise ValueError(f"candidate {key!r}: {len(predicted)} predictions for {n} gold records")
    first, second = halves
    if sorted([*first, *second]) != list(range(n)):
        raise ValueError(f"the halves must split the {n} records exactly (each index once)")

    def score(predicted: Sequence[Any], indices: Sequence[int]) -> float:
        return float(scorer([gold[i] for i in indices], [predicted[i] for i in indices]))

    choices, selected, held_out = [], [], []
    pooled: list[Any] = [None] * n
    for mapping, chosen_on, scored_on in ((per_half[0], first, second), (per_half[1], second, first)):
        best = max(mapping, key=lambda key: score(mapping[key], chosen_on))  # max keeps the first of ties
        choices.append(best)
        selected.append(score(mapping[best], chosen_on))
        held_out.append(score(mapping[best], scored_on))
        for i in scored_on:
            pooled[i] = mapping[best][i]
    return CrossSelection(choices=choices, selected_scores=selected, held_out_scores=held_out, predictions=pooled)
