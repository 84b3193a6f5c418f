"""Split-val selection: halves, choices made on one half and scored on the other."""

from __future__ import annotations

import doctest
import importlib

import pytest

from kecpm.eval import cross_select, evaluate, make_scorer, val_halves
from kecpm.synthetic import synthetic_posts


def test_val_halves_split_every_index_once_and_repeat_with_the_seed():
    first, second = val_halves(11, seed=3)
    assert sorted(first + second) == list(range(11))
    assert (len(first), len(second)) == (6, 5)
    assert val_halves(11, seed=3) == (first, second)
    assert val_halves(11, seed=4) != (first, second)
    with pytest.raises(ValueError, match="at least 2"):
        val_halves(1, seed=0)


def test_each_half_is_predicted_by_the_choice_made_on_the_other():
    gold = synthetic_posts(16, seed=2)
    first, second = val_halves(len(gold), seed=0)
    right = [p.quintuples for p in gold]
    # "a" is right on the first half only, "b" on the second only: each half's choice fails the other.
    a = [right[i] if i in first else [] for i in range(len(gold))]
    b = [right[i] if i in second else [] for i in range(len(gold))]
    chosen = cross_select(gold, {"a": a, "b": b}, make_scorer(), (first, second))
    assert chosen.choices == ["a", "b"]
    assert chosen.selected_scores == [1.0, 1.0]
    assert chosen.held_out_scores == [0.0, 0.0]
    assert evaluate(gold, chosen.predictions).micro.f1 == 0.0
    # Plain selection on all of val would have reported 2/3 for either.
    assert evaluate(gold, a).micro.f1 == pytest.approx(2 / 3, abs=0.1)


def test_a_candidate_right_everywhere_wins_on_both_halves_and_ties_go_to_the_first():
    gold = synthetic_posts(10, seed=5)
    right = [p.quintuples for p in gold]
    halves = val_halves(len(gold), seed=1)
    chosen = cross_select(gold, {1: [[] for _ in gold], 2: right, 3: right}, make_scorer(), halves)
    assert chosen.choices == [2, 2]
    assert chosen.predictions == right


def test_a_pair_of_mappings_chooses_among_each_half_s_own_candidates():
    gold = synthetic_posts(12, seed=4)
    halves = val_halves(len(gold), seed=2)
    right, empty = [p.quintuples for p in gold], [[] for _ in gold]
    chosen = cross_select(gold, ({"x": empty, "y": right}, {"x": right, "y": empty}), make_scorer(), halves)
    assert chosen.choices == ["y", "x"]
    assert chosen.predictions == right
    with pytest.raises(ValueError, match="at least one"):
        cross_select(gold, ({"x": right}, {}), make_scorer(), halves)


def test_bad_candidates_and_halves_are_refused():
    gold = synthetic_posts(6, seed=1)
    halves = val_halves(6, seed=0)
    with pytest.raises(ValueError, match="at least one"):
        cross_select(gold, {}, make_scorer(), halves)
    with pytest.raises(ValueError, match="candidate 'short': 5 predictions for 6"):
        cross_select(gold, {"short": [[]] * 5}, make_scorer(), halves)
    with pytest.raises(ValueError, match="split the 6 records"):
        cross_select(gold, {"x": [[]] * 6}, make_scorer(), ([0, 1, 2], [2, 3, 4]))


def test_doctests():
    assert doctest.testmod(importlib.import_module("kecpm.eval.crossval")).failed == 0
