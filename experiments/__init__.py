"""Prompt-template experiments: a grid of pipeline settings run over seeds through the cached ``kecpm run``
stages, knowledge-quality signals, a leaderboard, transcripts and diffs of cells, and replay.

>>> from kecpm.experiments import Grid, run_experiment
>>> result = run_experiment(Grid.from_file("examples/grid.toml"), "runs/experiments/demo")  # doctest: +SKIP
"""

from .grid import AXES, Cell, Grid
from .leaderboard import write_leaderboard
from .quality import QualitySignals, knowledge_quality
from .replay import ReplayResult, ReplayRow, replay
from .results import CellSummary, ExperimentResult, Figure, SeedRun
from .runner import Event, estimate_experiment, run_experiment
from .transcripts import diff_cells, load_experiment, transcript

__all__ = [
    "AXES",
    "Cell",
    "CellSummary",
    "Event",
    "ExperimentResult",
    "Figure",
    "Grid",
    "QualitySignals",
    "ReplayResult",
    "ReplayRow",
    "SeedRun",
    "diff_cells",
    "estimate_experiment",
    "knowledge_quality",
    "load_experiment",
    "replay",
    "run_experiment",
    "transcript",
    "write_leaderboard",
]
