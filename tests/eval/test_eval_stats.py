"""Mean +- std over seeds and the bootstrap interval over records."""

from __future__ import annotations

import doctest
import importlib

import pytest

from kecpm.eval import bootstrap_ci, evaluate, mean_std, summarize_seeds
from kecpm.synthetic import synthetic_posts


def test_mean_std_is_the_sample_std():
    assert mean_std([0.2, 0.4]) == (pytest.approx(0.3), pytest.approx(0.02**0.5))
    assert mean_std([0.2, 0.4], ddof=0) == (pytest.approx(0.3), pytest.approx(0.1))
    assert mean_std([0.7]) == (0.7, 0.0)
    with pytest.raises(ValueError):
        mean_std([])


def half_right(seed, n=40):
    gold = synthetic_posts(n, seed=seed)
    return gold, [post.quintuples if index % 2 else [] for index, post in enumerate(gold)]


def test_summarize_seeds():
    runs = [evaluate(*half_right(1)), evaluate(*half_right(2, n=30)), evaluate(*half_right(3, n=20))]
    summary = summarize_seeds(runs)
    # Recall is 1/2 in every run (n even), precision 1.
    assert summary["micro_recall"].values == [0.5, 0.5, 0.5]
    assert summary["micro_recall"].std == 0.0
    assert summary["micro_f1"].mean == pytest.approx(2 / 3)
    assert set(summary) >= {"micro_f1", "macro_f1", "entity_f1", "pair_relation_f1"}


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    gold, pred = half_right(5, n=60)
    point = evaluate(gold, pred).micro.f1
    first = bootstrap_ci(gold, pred, n_resamples=300, seed=1)
    assert first == bootstrap_ci(gold, pred, n_resamples=300, seed=1)
    assert first != bootstrap_ci(gold, pred, n_resamples=300, seed=2)
    low, high = first
    assert low < point < high
    # Fewer records, wider interval; a narrower confidence, a narrower interval.
    small_low, small_high = bootstrap_ci(gold[:15], pred[:15], n_resamples=300, seed=1)
    assert small_high - small_low > high - low
    narrow_low, narrow_high = bootstrap_ci(gold, pred, n_resamples=300, seed=1, confidence=0.5)
    assert low <= narrow_low < narrow_high <= high


def test_bootstrap_of_perfect_predictions_and_of_other_metrics():
    gold = synthetic_posts(21, seed=4)
    perfect = [post.quintuples for post in gold]
    assert bootstrap_ci(gold, perfect, n_resamples=50) == (1.0, 1.0)
    # Paper macro drops when a resample misses a relation; standard macro averages over the full gold's.
    low, high = bootstrap_ci(gold, perfect, metric="macro_f1", n_resamples=200)
    assert low < high < 1.0  # one record per relation: a resample almost never holds all 21
    assert bootstrap_ci(gold, perfect, metric="macro_f1", mode="standard", n_resamples=200) == (1.0, 1.0)
    with pytest.raises(ValueError, match="unknown metric"):
        bootstrap_ci(gold, perfect, metric="accuracy")


@pytest.mark.parametrize(
    "module", ["kecpm.eval", "kecpm.eval.matching", "kecpm.eval.metrics", "kecpm.eval.stats", "kecpm.eval.report"]
)
def test_docstring_examples_run(module):
    results = doctest.testmod(importlib.import_module(module))
    assert results.failed == 0
