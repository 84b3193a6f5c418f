"""Evaluation: the KECPM paper's scores and standard ones, per relation, over seeds, with reports.

>>> from kecpm.eval import evaluate, make_scorer
>>> gold = [[("Ann", "per", "Bo", "per", "couple")]]
>>> evaluate(gold, gold, mode="standard").macro_f1
1.0
>>> make_scorer(mode="paper", metric="micro_f1")(gold, gold)
1.0
"""

from .crossval import CrossSelection, cross_select, val_halves
from .matching import Match, Mode, count_matches, normalise_name, paper_sentence
from .metrics import (
    METRICS,
    PRF,
    EvaluationResult,
    entity_f1,
    evaluate,
    macro_f1,
    make_scorer,
    micro_f1,
    pair_relation_f1,
    per_relation_scores,
    precision_recall_f1,
    relation_confusion,
)
from .report import EvaluationReport, RunReport, evaluate_files, load_run, plot_report, write_report
from .stats import MeanStd, bootstrap_ci, mean_std, summarize_seeds

__all__ = [
    "METRICS",
    "PRF",
    "CrossSelection",
    "EvaluationReport",
    "EvaluationResult",
    "Match",
    "MeanStd",
    "Mode",
    "RunReport",
    "bootstrap_ci",
    "count_matches",
    "cross_select",
    "entity_f1",
    "evaluate",
    "evaluate_files",
    "load_run",
    "macro_f1",
    "make_scorer",
    "mean_std",
    "micro_f1",
    "normalise_name",
    "pair_relation_f1",
    "paper_sentence",
    "per_relation_scores",
    "plot_report",
    "precision_recall_f1",
    "relation_confusion",
    "summarize_seeds",
    "val_halves",
    "write_report",
]
