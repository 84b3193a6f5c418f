"""Replaying an experiment from its manifest: the same grid rerun, its LLM calls answered from a copy of
the recorded cache, and every score compared with the recorded one."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from ..errors import KecpmError
from ..pipeline import Manifest
from .results import ExperimentResult
from .runner import Event, run_experiment
from .transcripts import load_experiment

__all__ = ["ReplayResult", "ReplayRow", "replay"]


class ReplayRow(BaseModel):
    """One run's recorded and replayed scores."""

    cell: str
    seed: int
    recorded: dict[str, float]
    replayed: dict[str, float]

    @property
    def difference(self) -> float:
        return max((abs(self.recorded[k] - self.replayed.get(k, float("nan"))) for k in self.recorded), default=0.0)


class ReplayResult(BaseModel):
    experiment: ExperimentResult
    rows: list[ReplayRow]

    @property
    def max_difference(self) -> float:
        return max((r.difference for r in self.rows), default=0.0)


def replay(
    manifest: str | Path,
    *,
    out: str | Path | None = None,
    cells: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    on_event: Event | None = None,
) -> ReplayResult:
    """Rerun the grid (or the ``cells``/``seeds``) an experiment manifest records, into ``out``
    (default: ``<experiment>/replay``), answering LLM calls from a copy of its cache; compare the scores.

    A run manifest of one of its cells (``cells/<cell>/seed_<s>/manifest.json``) replays that cell and seed.
    """
    path = Path(manifest)
    single = Manifest.read(path)
    if single.kind == "run":
        experiment_manifest = path.parents[3] / "manifest.json"
        if not experiment_manifest.exists():
            raise KecpmError(f"{path}: a run manifest outside an experiment; replay its experiment's manifest")
        root, recorded, grid = load_experiment(experiment_manifest)
        slug, seed = path.parents[1].name, int(path.parent.name.removeprefix("seed_"))
        cells, seeds = [slug], [seed]
    else:
        root, recorded, grid = load_experiment(path)
    target = Path(out) if out is not None else root / "replay"
    source_cache = Path(recorded.outputs.get("knowledge_cache", root / "shared" / "knowledge.sqlite"))
    if source_cache.exists():
        (target / "shared").mkdir(parents=True, exist_ok=True)
        copy_cache = target / "shared" / "knowledge.sqlite"
        if not copy_cache.exists():
            # The backup API copies a consistent snapshot, WAL included.
            with sqlite3.connect(source_cache) as src, sqlite3.connect(copy_cache) as dst:
                src.backup(dst)
    experiment = run_experiment(grid, target, cells=cells, seeds=seeds, on_event=on_event)
    before = {(c["name"], r["seed"]): r["scores"] for c in recorded.extra["cells"] for r in c["runs"]}
    rows = [
        ReplayRow(cell=c.name, seed=r.seed, recorded=before[(c.name, r.seed)], replayed=r.scores)
        for c in experiment.cells
        for r in c.runs
        if (c.name, r.seed) in before
    ]
    return ReplayResult(experiment=experiment, rows=rows)
