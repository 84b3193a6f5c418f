"""What an experiment produced: one run per cell and seed, each cell over its seeds, the whole grid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ..errors import KecpmError
from ..eval import mean_std
from ..pipeline import RunConfig, redact
from .grid import Cell, Grid
from .quality import QualitySignals

__all__ = ["CellSummary", "ExperimentResult", "Figure", "SeedRun", "summarize"]


class SeedRun(BaseModel):
    """One cell on one seed: its scores, what its knowledge cost, and where its manifest is."""

    seed: int
    out: str = Field(description="the run's folder, relative to the experiment's")
    manifest: str = Field(description="the run's manifest, relative to the experiment's folder")
    scores: dict[str, float]
    llm_calls: int = Field(description="LLM calls the run's knowledge stage made (paid), when it ran")
    cached_calls: int = Field(description="LLM answers it got from the shared cache, when it ran")
    failed_posts: int = Field(default=0, description="posts whose knowledge could not be built")
    calls_needed: int = Field(description="LLM calls the run's knowledge takes on its own (every step)")
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = Field(default=0.0, description="of calls_needed, at the LLM config's prices")
    trained: bool = Field(description="False when an extractor trained on identical inputs was reused")
    quality: QualitySignals | None = None
    stages: dict[str, str] = Field(default_factory=dict, description="stage -> done/cached/...")
    seconds: float = 0.0


class Figure(BaseModel):
    """A mean and standard deviation over seeds."""

    mean: float
    std: float


class CellSummary(BaseModel):
    """A cell over its seeds."""

    name: str
    slug: str
    levels: dict[str, Any]
    config: dict[str, Any] = Field(description="the run settings of its first seed (secrets removed)")
    runs: list[SeedRun]
    f1: dict[str, Figure] = Field(default_factory=dict, description="score -> mean +- std over seeds")
    quality: dict[str, Figure | None] = Field(default_factory=dict)

    @property
    def calls_needed(self) -> float:
        return sum(r.calls_needed for r in self.runs) / len(self.runs)

    @property
    def tokens(self) -> float:
        return sum(r.input_tokens + r.output_tokens for r in self.runs) / len(self.runs)

    @property
    def cost(self) -> float:
        return sum(r.cost for r in self.runs) / len(self.runs)


class ExperimentResult(BaseModel):
    out: Path
    shared: Path = Field(description="the stores, LLM call cache and trained extractors the cells shared")
    grid: Grid
    cells: list[CellSummary]
    totals: dict[str, int] = Field(default_factory=dict, description="llm_calls, cached_calls, calls_needed, ...")
    leaderboard: dict[str, Path] = Field(default_factory=dict)
    manifest: Path | None = None
    seconds: float = 0.0

    def cell(self, name: str) -> CellSummary:
        for cell in self.cells:
            if name in (cell.name, cell.slug):
                return cell
        raise KecpmError(f"no cell {name!r} (cells: {', '.join(c.name for c in self.cells)})")


def _figure(values: Sequence[float | None]) -> Figure | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    mean, std = mean_std(present)
    return Figure(mean=mean, std=std)


def summarize(cell: Cell, config: RunConfig, runs: list[SeedRun]) -> CellSummary:
    """A cell's runs over its seeds: F1 and quality signals as mean +- std."""
    f1 = {name: _figure([r.scores[name] for r in runs]) for name in runs[0].scores}
    quality = {
        name: _figure([getattr(r.quality, name) if r.quality else None for r in runs])
        for name in ("unsupported_share", "accepted_share", "statements", "words", "entity_mention_share")
    }
    return CellSummary(
        name=cell.name,
        slug=cell.slug,
        levels=cell.levels,
        config=redact(config.model_dump(mode="json", exclude={"out"})),
        runs=runs,
        f1={k: v for k, v in f1.items() if v is not None},
        quality=quality,
    )
