"""Prompt-template experiments: a grid of pipeline settings run over seeds, with a leaderboard.

A grid file (TOML or YAML) names the shared settings, the seeds and the axes; every combination of
axis values is a *cell*, and every cell runs once per seed through :func:`~kecpm.agents.run.run_method`::

    name = "templates-k-rounds"
    seeds = [1, 2, 3]          # real data: DATA/jmere/few_shot/seed_<s>; synthetic: the sample's seed
    epochs = 6
    synthetic_size = [24, 12]  # no `data`: the synthetic sample
    [pipeline.llm]
    base_url = "http://127.0.0.1:8765/v1"
    model = "loopback"
    [axes]
    generate = ["generate@v1", "generate@v2"]
    k = [1, 2]
    rounds = [0, 1]

Axis names are aliases (:data:`AXES`) or dotted paths into the run's settings
(``pipeline.llm.temperature``); a value that is a table sets several at once
(``weights = [{text_weight = 1.0, image_weight = 0.0}, ...]``).

All cells share one demonstration store per seed, one LLM call cache and one folder of trained
extractors keyed by their inputs, so shared work is done once: cells differing only in the extractor
make no LLM call, and cells whose knowledge came out identical train once.

>>> grid = Grid.from_file("examples/grid.toml")  # doctest: +SKIP
>>> result = run_experiment(grid, "runs/experiments/demo")  # doctest: +SKIP
>>> result.cells[0].f1["paper_micro_f1"].mean  # doctest: +SKIP
>>> print(diff_cells("runs/experiments/demo", result.cells[0].name, result.cells[1].name))  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import difflib
import itertools
import json
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import KecpmError
from ..manifest import Manifest
from ..settings_file import read_settings_file, resolve_path
from .run import RunConfig, run_method

__all__ = [
    "AXES",
    "Cell",
    "CellSummary",
    "ExperimentResult",
    "Grid",
    "QualitySignals",
    "ReplayResult",
    "SeedRun",
    "diff_cells",
    "knowledge_quality",
    "replay",
    "run_experiment",
    "write_leaderboard",
]

AXES: dict[str, str] = {
    "generate": "pipeline.templates.generate",
    "critique": "pipeline.templates.critique",
    "revise": "pipeline.templates.revise",
    "k": "pipeline.selection.k",
    "text_weight": "pipeline.selection.text_weight",
    "image_weight": "pipeline.selection.image_weight",
    "mmr": "pipeline.selection.mmr",
    "mmr_lambda": "pipeline.selection.mmr_lambda",
    "fetch_k": "pipeline.selection.fetch_k",
    "rounds": "pipeline.rounds",
    "model": "pipeline.llm.model",
    "temperature": "pipeline.llm.temperature",
    "knowledge": "knowledge",
    "pool": "pool",
    "parts": "parts",
    "input_template": "input_template",
    "knowledge_sentences": "knowledge_sentences",
}
"""Axis aliases -> the setting they change (a dotted path into the run's settings)."""

# Settings an axis may change: the pipeline's, and the run's that do not change the data or the seeds.
_AXIS_ROOTS = ("pipeline", "knowledge", "pool", "parts", "input_template", "knowledge_sentences", "epochs", "patience")
_TEMPLATE_STAGES = ("generate", "critique", "revise")

Event = Callable[[str, int, str, str, float], None]
"""``on_event(cell, seed, stage, status, seconds)``: progress of :func:`run_experiment`."""


# -- the grid --------------------------------------------------------------------------------------
class Cell(BaseModel):
    """One combination of axis values: ``settings`` maps each setting path to its value."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="axis=value pairs, e.g. 'generate=v2 k=2 rounds=1'")
    slug: str = Field(description="the cell's folder name")
    levels: dict[str, Any] = Field(description="axis -> the value it takes in this cell")
    settings: dict[str, Any] = Field(description="setting path -> value")


class Grid(BaseModel):
    """An experiment: shared run settings, the seeds, and the axes whose product makes the cells."""

    model_config = ConfigDict(extra="forbid")

    name: str = "experiment"
    data: Path | None = Field(default=None, description="DATA (holding jmere/few_shot/seed_<s>) or a few_shot folder")
    seeds: list[int] = Field(default_factory=lambda: [17], min_length=1)
    split: str = Field(default="val", description="the split predicted and scored (select on val)")
    epochs: int = Field(default=5, ge=1)
    patience: int = Field(default=6, ge=1)
    limit: int | None = Field(default=None, ge=1)
    synthetic_size: tuple[int, int] = (42, 21)
    knowledge: Literal["llm", "released", "none"] = "llm"
    pool: Literal["train", "human"] = "train"
    parts: str = "imagecap_know"
    input_template: str = "extract_input@v1"
    knowledge_sentences: int | None = Field(default=None, ge=1)
    pipeline: dict[str, Any] = Field(default_factory=dict, description="the base PipelineConfig (llm, selection, ...)")
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    source: Path | None = Field(default=None, exclude=True, description="the file it was read from")

    @field_validator("axes")
    @classmethod
    def _axes_have_values(cls, axes: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for name, values in axes.items():
            if not values:
                raise ValueError(f"axis {name!r} has no values")
            for value in values:
                for path in value if isinstance(value, dict) else [name]:
                    if _setting_path(path).split(".")[0] not in _AXIS_ROOTS:
                        raise ValueError(
                            f"axis {name!r}: {path!r} is not a setting an axis may change "
                            f"(aliases: {', '.join(AXES)}; or a dotted path under {', '.join(_AXIS_ROOTS)})"
                        )
        return axes

    @model_validator(mode="after")
    def _no_secrets(self) -> Grid:
        if "api_key" in self.pipeline.get("llm", {}):
            raise ValueError("the grid must not hold an API key: set the variable named by llm.api_key_env")
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> Grid:
        """Read a ``.toml``/``.yaml`` grid; relative paths in it are taken from the file's folder."""
        path = Path(path)
        data = read_settings_file(path, what="grid")
        base = path.resolve().parent
        if data.get("data"):
            data["data"] = resolve_path(base, data["data"])
        pipeline = data.get("pipeline", {})
        if pipeline.get("template_dirs"):
            pipeline["template_dirs"] = [str(resolve_path(base, d)) for d in pipeline["template_dirs"]]
        try:
            grid = cls.model_validate({**data, "source": path.resolve()})
        except ValidationError as exc:
            raise KecpmError(f"{path}: {exc}") from None
        grid.check()
        return grid

    def cells(self) -> list[Cell]:
        """Every combination of axis values, the first axis varying slowest."""
        names = list(self.axes)
        cells = []
        for values in itertools.product(*(self.axes[n] for n in names)):
            levels = dict(zip(names, values, strict=True))
            settings: dict[str, Any] = {}
            labels = []
            for axis, value in levels.items():
                pairs = value.items() if isinstance(value, dict) else [(axis, value)]
                for key, item in pairs:
                    path = _setting_path(key)
                    settings[path] = _template_ref(path, item)
                labels.append(f"{axis}={_label(axis, value)}")
            name = " ".join(labels) or "base"
            slug = re.sub(r"[^A-Za-z0-9.@-]+", "_", name.replace("=", "-")).strip("_")
            cells.append(Cell(name=name, slug=slug, levels=levels, settings=settings))
        return cells

    def seed_data(self, seed: int) -> Path | None:
        """The KECPM seed folder of ``seed`` (None: the synthetic sample)."""
        if self.data is None:
            return None
        for folder in (self.data / "jmere" / "few_shot", self.data / "few_shot", self.data):
            if (folder / f"seed_{seed}" / "train.json").is_file():
                return folder / f"seed_{seed}"
        raise KecpmError(f"{self.data}: no seed_{seed}/train.json under it (nor under jmere/few_shot/)")

    def run_config(
        self,
        cell: Cell,
        seed: int,
        *,
        out: Path,
        shared: Path | None = None,
    ) -> RunConfig:
        """The :class:`RunConfig` of one cell and seed; with ``shared``, its store (one per seed and
        pool), LLM call cache and trained extractors live there, shared with the other cells."""
        values: dict[str, Any] = {
            "knowledge": self.knowledge,
            "pool": self.pool,
            "parts": self.parts,
            "input_template": self.input_template,
            "knowledge_sentences": self.knowledge_sentences,
            "epochs": self.epochs,
            "patience": self.patience,
            "pipeline": copy.deepcopy(self.pipeline),
        }
        for path, value in cell.settings.items():
            _assign(values, path, value)
        config = RunConfig(
            out=out,
            data=self.seed_data(seed),
            eval_split=self.split,
            seed=seed,
            limit=self.limit,
            synthetic_size=self.synthetic_size,
            **values,
        )
        if shared is None:
            return config
        return config.model_copy(
            update={
                "store_dir": shared / "stores" / f"seed_{seed}_{config.pool}_{self.limit or 'all'}",
                "knowledge_cache": shared / "knowledge.sqlite",
                "model_cache": shared / "models",
            }
        )

    def check(self) -> None:
        """Fail before any work: every cell's config must validate and every template must exist."""
        from ..prompts import load_template

        for cell in self.cells():
            try:
                config = self.run_config(cell, self.seeds[0], out=Path("."))
                dirs = config.pipeline.template_dirs
                for ref in [*config.pipeline.templates.values(), config.input_template]:
                    load_template(ref, search_dirs=dirs)
            except (ValidationError, KecpmError, ValueError) as exc:
                raise KecpmError(f"grid {self.name!r}, cell {cell.name!r}: {exc}") from None


def _setting_path(key: str) -> str:
    return AXES.get(key, key)


def _template_ref(path: str, value: Any) -> Any:
    """``v2`` or ``2`` on a template axis means ``<stage>@v2``."""
    stage = path.rsplit(".", 1)[-1]
    if path.startswith("pipeline.templates.") and stage in _TEMPLATE_STAGES:
        text = str(value)
        if "@" not in text:
            return f"{stage}@{text if text.startswith('v') else 'v' + text}"
    return value


def _label(axis: str, value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}:{_label(k, v)}" for k, v in value.items())
    text = str(value)
    return text.split("@", 1)[1] if _setting_path(axis).startswith("pipeline.templates.") and "@" in text else text


def _assign(values: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    target = values
    for part in parents:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise KecpmError(f"setting {path!r}: {part!r} is not a table")
    target[last] = value


# -- quality signals -------------------------------------------------------------------------------
class QualitySignals(BaseModel):
    """Knowledge quality that needs no gold knowledge (None where a signal does not apply)."""

    posts: int = Field(description="posts with knowledge")
    unsupported_share: float | None = Field(
        description="share of the generated statements that the first critique marked unsupported (None: no critique)"
    )
    accepted_share: float | None = Field(description="share of posts whose knowledge a critique accepted")
    statements: float = Field(description="mean statements per post")
    words: float = Field(description="mean words of knowledge per post")
    entity_mention_share: float | None = Field(description="share of gold entities named in their post's knowledge")


def knowledge_quality(results: Sequence[Any], posts: Sequence[Any]) -> QualitySignals:
    """Signals over ``results`` (KnowledgeResults); ``posts`` give the gold entities by post id.

    >>> from kecpm.agents.schemas import KnowledgeResult
    >>> from kecpm.synthetic import synthetic_posts
    >>> post = synthetic_posts(1, seed=3)[0]
    >>> name = post.quintuples[0].head.name
    >>> result = KnowledgeResult(post_id=post.id, knowledge=[f"{name} is a name."], steps=[], accepted=False)
    >>> knowledge_quality([result], [post]).entity_mention_share > 0
    True
    """
    gold = {p.id: {e.name.lower() for q in p.quintuples for e in (q.head, q.tail)} for p in posts}
    judged = unsupported = accepted = critiqued = mentioned = entities = 0
    statements = words = 0
    for result in results:
        statements += len(result.knowledge)
        text = " ".join(result.knowledge)
        words += len(text.split())
        names = gold.get(result.post_id, set())
        entities += len(names)
        mentioned += sum(name in text.lower() for name in names)
        generated = next((s.output for s in result.steps if s.stage == "generate"), None)
        critique = next((s.output for s in result.steps if s.stage == "critique"), None)
        if critique is not None and generated is not None:
            critiqued += 1
            accepted += result.accepted
            verdicts = {c.index: c.verdict for c in critique.checks if c.index <= len(generated.statements)}
            judged += len(generated.statements)
            unsupported += sum(v == "unsupported" for v in verdicts.values())
    count = len(results)
    return QualitySignals(
        posts=count,
        unsupported_share=unsupported / judged if judged else None,
        accepted_share=accepted / critiqued if critiqued else None,
        statements=statements / count if count else 0.0,
        words=words / count if count else 0.0,
        entity_mention_share=mentioned / entities if entities else None,
    )


# -- results ---------------------------------------------------------------------------------------
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
    from ..eval import mean_std

    present = [v for v in values if v is not None]
    if not present:
        return None
    mean, std = mean_std(present)
    return Figure(mean=mean, std=std)


def _summarize(cell: Cell, config: RunConfig, runs: list[SeedRun]) -> CellSummary:
    from ..manifest import redact

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


# -- running ---------------------------------------------------------------------------------------
def run_experiment(
    grid: Grid,
    out: str | Path,
    *,
    cells: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    on_event: Event | None = None,
    leaderboard: bool = True,
    shared: str | Path | None = None,
) -> ExperimentResult:
    """Run every cell (or those named in ``cells``) on every seed; write the leaderboard and manifest.

    Work is shared through ``shared`` (default ``OUT/shared``; give another experiment's to build on its
    work): one store per seed, one LLM call cache, one folder of trained extractors. A rerun into the
    same ``out`` skips every finished stage.
    """
    out = Path(out)
    shared = Path(shared) if shared is not None else out / "shared"
    grid.check()
    chosen = grid.cells()
    if cells is not None:
        chosen = [c for c in chosen if c.name in cells or c.slug in cells]
        if not chosen:
            raise KecpmError(f"no cell named {', '.join(cells)} in the grid")
    started = time.perf_counter()
    summaries = []
    for cell in chosen:
        runs = []
        config = None
        for seed in seeds or grid.seeds:
            config = grid.run_config(
                cell,
                seed,
                out=out / "cells" / cell.slug / f"seed_{seed}",
                shared=shared,
            )
            runs.append(_run_one(config, out, cell.name, seed, on_event))
        assert config is not None
        summaries.append(_summarize(cell, config, runs))
    result = ExperimentResult(out=out, shared=shared, grid=grid, cells=summaries, seconds=time.perf_counter() - started)
    result.totals = {
        name: sum(getattr(r, name) for c in summaries for r in c.runs)
        for name in ("llm_calls", "cached_calls", "calls_needed")
    }
    result.totals["runs"] = sum(len(c.runs) for c in summaries)
    result.totals["trainings"] = sum(r.trained for c in summaries for r in c.runs)
    if leaderboard:
        result.leaderboard = write_leaderboard(result, out)
    result.manifest = _write_manifest(result)
    return result


def _run_one(config: RunConfig, root: Path, cell: str, seed: int, on_event: Event | None) -> SeedRun:
    from ..post_files import load_split
    from .cache import KnowledgeCache
    from .schemas import KnowledgeResult

    statuses: dict[str, str] = {}

    def on_stage(stage: str, status: str, seconds: float) -> None:
        if status != "running":
            statuses[stage] = status
        if on_event is not None:
            on_event(cell, seed, stage, status, seconds)

    started = time.perf_counter()
    result = run_method(config, on_stage=on_stage)
    # As recorded when the stage ran (a rerun that skips it keeps the figures of the run that paid).
    knowledge = result.stages.get("knowledge", {})
    run = SeedRun(
        seed=seed,
        out=str(config.out.relative_to(root)),
        manifest=str(result.manifest.relative_to(root)),
        scores=result.scores,
        llm_calls=knowledge.get("calls", 0),
        cached_calls=knowledge.get("cached_calls", 0),
        failed_posts=knowledge.get("failed", 0),
        calls_needed=0,
        trained=not result.stages["train"].get("reused", False),
        stages=statuses,
        seconds=time.perf_counter() - started,
    )
    trajectories = config.out / "knowledge" / "trajectories.jsonl"
    if config.knowledge == "llm" and trajectories.exists():
        results = [
            KnowledgeResult.model_validate_json(line)
            for line in trajectories.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        folder = config.data or config.out / "data"
        posts = [*load_split(folder, "train", knowledge=False), *load_split(folder, config.eval_split, knowledge=False)]
        run.quality = knowledge_quality(results, posts)
        llm = config.pipeline.llm
        with KnowledgeCache(config.knowledge_cache or config.out / "knowledge.sqlite") as cache:
            for item in results:
                for step in item.steps:
                    run.calls_needed += 1
                    if (call := cache.get_call(step.key)) is not None:
                        run.input_tokens += call.input_tokens
                        run.output_tokens += call.output_tokens
        run.cost = llm.cost(run.input_tokens, run.output_tokens)
    return run


def _write_manifest(result: ExperimentResult) -> Path:
    from ..manifest import file_sha256

    out = result.out
    cells = [
        {
            "name": c.name,
            "slug": c.slug,
            "levels": c.levels,
            "config": c.config,
            "runs": [r.model_dump(mode="json", exclude={"quality", "stages"}) for r in c.runs],
        }
        for c in result.cells
    ]
    return Manifest.create(
        "experiment",
        config=result.grid.model_dump(mode="json"),
        inputs=[result.grid.source] if result.grid.source is not None and result.grid.source.exists() else [],
        templates=_templates(result.grid),
        outputs={
            "out": out.resolve(),
            "shared": result.shared.resolve(),
            "knowledge_cache": (result.shared / "knowledge.sqlite").resolve(),
            **{name: path.resolve() for name, path in result.leaderboard.items()},
        },
        extra={
            # The grid exactly as run (it holds no secret: Grid rejects API keys); replay reads this.
            "grid_json": result.grid.model_dump_json(),
            "cells": cells,
            "totals": result.totals,
            "seconds": round(result.seconds, 1),
            "leaderboard_sha256": file_sha256(out / "leaderboard.json") if "json" in result.leaderboard else "",
        },
    ).write(out / "manifest.json")


def _templates(grid: Grid) -> dict[str, str]:
    from .knowledge import DEFAULT_TEMPLATES

    refs: dict[str, set[str]] = {}
    for cell in grid.cells():
        config = grid.run_config(cell, grid.seeds[0], out=Path("."))
        for stage, ref in {**DEFAULT_TEMPLATES, **config.pipeline.templates}.items():
            refs.setdefault(stage, set()).add(ref)
        refs.setdefault("extract_input", set()).add(config.input_template)
    return {stage: ", ".join(sorted(values)) for stage, values in refs.items()}


# -- the leaderboard -------------------------------------------------------------------------------
def _pct(figure: Figure | None) -> str:
    return "n/a" if figure is None else f"{100 * figure.mean:.1f} ± {100 * figure.std:.1f}"


def write_leaderboard(result: ExperimentResult, out: str | Path) -> dict[str, Path]:
    """``leaderboard.md``, ``leaderboard.json``, ``f1_by_cell.png`` and ``f1_vs_calls.png`` in ``out``.

    Cells are ranked by paper micro-F1 (mean over seeds); each links to its runs' manifests.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ranked = sorted(result.cells, key=lambda c: -c.f1["paper_micro_f1"].mean)
    rows = []
    for rank, cell in enumerate(ranked, start=1):
        links = " ".join(f"[{r.seed}]({r.manifest})" for r in cell.runs)
        q = cell.quality
        made = sum(r.llm_calls for r in cell.runs)
        cached = sum(r.cached_calls for r in cell.runs)
        rows.append(
            f"| {rank} | `{cell.name}` | {_pct(cell.f1['paper_micro_f1'])} | {_pct(cell.f1['paper_macro_f1'])} "
            f"| {_pct(cell.f1.get('standard_micro_f1'))} | {_pct(q.get('unsupported_share'))} "
            f"| {_pct(q.get('entity_mention_share'))} | {_num(q.get('words'))} "
            f"| {cell.calls_needed:.0f} | {cell.tokens:.0f} | {made} | {cached} | {links} |"
        )
    failed = [f"{c.name} (seed {r.seed}): {r.failed_posts}" for c in ranked for r in c.runs if r.failed_posts]
    grid = result.grid
    axes = "; ".join(f"{name}: {', '.join(_label(name, v) for v in values)}" for name, values in grid.axes.items())
    totals = result.totals
    lines = [
        f"# Leaderboard: {grid.name}",
        "",
        f"{len(result.cells)} cells x {len(grid.seeds)} seeds ({', '.join(map(str, grid.seeds))}) on "
        f"{grid.split}, {'synthetic sample ' + str(tuple(grid.synthetic_size)) if grid.data is None else grid.data}"
        f"{f', first {grid.limit} posts' if grid.limit else ''}, {grid.epochs} epochs. Axes: {axes}.",
        "",
        "Scores in %, mean ± std over seeds. *unsupported*: share of generated statements the first critique "
        "marked unsupported; *entities*: share of gold entities named in their post's knowledge; *words*: "
        "knowledge words per post; *calls/run*, *tokens/run*: LLM calls and tokens (in + out) one run of the "
        "cell takes on its own; *made* and "
        "*cached*: calls this grid paid for and answers it got from the shared cache (all seeds).",
        "",
        "| # | cell | micro-F1 | macro-F1 | standard micro-F1 | unsupported | entities | words "
        "| calls/run | tokens/run | made | cached | manifests (seed) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"LLM calls: {totals.get('llm_calls', 0)} made, {totals.get('cached_calls', 0)} served from the shared "
        f"cache, {totals.get('calls_needed', 0)} needed by the runs on their own. Extractors trained: "
        f"{totals.get('trainings', 0)} for {totals.get('runs', 0)} runs (runs with identical inputs share one).",
        *(
            [
                "",
                "**Posts without knowledge** (their build failed; see each run's knowledge_failures.json): "
                + "; ".join(failed),
            ]
            if failed
            else []
        ),
        "",
        "![F1 per cell](f1_by_cell.png)",
        "",
        "![F1 against LLM calls](f1_vs_calls.png)",
        "",
    ]
    paths = {"markdown": out / "leaderboard.md", "json": out / "leaderboard.json"}
    paths["markdown"].write_text("\n".join(lines), encoding="utf-8")
    board = {
        "grid": grid.model_dump(mode="json"),
        "totals": totals,
        "cells": [c.model_dump(mode="json") | {"rank": i} for i, c in enumerate(ranked, start=1)],
    }
    paths["json"].write_text(json.dumps(board, indent=2) + "\n", encoding="utf-8")
    paths.update(_plots(ranked, out))
    return paths


def _num(figure: Figure | None) -> str:
    return "n/a" if figure is None else f"{figure.mean:.1f}"


def _plots(cells: Sequence[CellSummary], out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c.name for c in cells]
    means = [100 * c.f1["paper_micro_f1"].mean for c in cells]
    stds = [100 * c.f1["paper_micro_f1"].std for c in cells]
    figure, axis = plt.subplots(figsize=(8, 0.45 * len(cells) + 1.5))
    axis.barh(range(len(cells)), means, xerr=stds, capsize=3, color="#4c72b0")
    axis.set_yticks(range(len(cells)), names, fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel("paper micro-F1 (%), mean ± std over seeds")
    figure.tight_layout()
    paths = {"f1_by_cell": out / "f1_by_cell.png"}
    figure.savefig(paths["f1_by_cell"], dpi=120)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(7, 4.5))
    points: dict[tuple[float, float, float], list[str]] = {}
    for cell, mean, std in zip(cells, means, stds, strict=True):
        points.setdefault((round(cell.calls_needed, 3), round(mean, 6), round(std, 6)), []).append(cell.name)
    for (calls, mean, std), group in points.items():  # cells on one point share a marker and a label
        axis.errorbar(calls, mean, yerr=std, fmt="o", capsize=3)
        axis.annotate("\n".join(group), (calls, mean), fontsize=7, xytext=(4, 4), textcoords="offset points")
    axis.margins(x=0.3)  # room for the labels
    cost = sum(c.cost for c in cells)
    axis.set_xlabel("LLM calls per run" + (f" (total cost {cost:.4f})" if cost else ""))
    axis.set_ylabel("paper micro-F1 (%)")
    figure.tight_layout()
    paths["f1_vs_calls"] = out / "f1_vs_calls.png"
    figure.savefig(paths["f1_vs_calls"], dpi=120)
    plt.close(figure)
    return paths


# -- the diff view ---------------------------------------------------------------------------------
def _load(out: str | Path) -> tuple[Path, Manifest, Grid]:
    out = Path(out)
    path = out / "manifest.json" if out.is_dir() else out
    manifest = Manifest.read(path)
    if manifest.kind != "experiment":
        raise KecpmError(f"{path}: a {manifest.kind} manifest, not an experiment's")
    return path.parent, manifest, Grid.model_validate_json(manifest.extra["grid_json"])


def transcript(out: str | Path, cell: str, *, post_id: str | None = None, seed: int | None = None) -> str:
    """One cell's prompts and outputs for one post (default: the first post of the evaluated split).

    The prompts are rebuilt from the templates, the post and the demonstrations the store selects,
    and checked against the key of the call the cache holds.
    """
    import asyncio

    from ..post_files import load_split
    from ..prompts import load_template
    from ..retrieval import DemonstrationStore, StoreConfig
    from .cache import content_key
    from .knowledge import format_critique, format_knowledge, prompt_variables
    from .schemas import Critique, Knowledge, KnowledgeResult

    root, manifest, grid = _load(out)
    shared = Path(manifest.outputs.get("shared", root / "shared"))
    chosen = next((c for c in grid.cells() if cell in (c.name, c.slug)), None)
    if chosen is None:
        raise KecpmError(f"no cell {cell!r} in {root} (cells: {', '.join(c.name for c in grid.cells())})")
    seed = grid.seeds[0] if seed is None else seed
    folder = root / "cells" / chosen.slug / f"seed_{seed}"
    config = grid.run_config(
        chosen,
        seed,
        out=folder,
        shared=shared,
    )
    lines = [f"# {chosen.name} (seed {seed})"]
    trajectories = folder / "knowledge" / "trajectories.jsonl"
    if not trajectories.exists():
        return "\n".join([*lines, "(no knowledge was built for this cell)"])
    results = {
        r.post_id: r
        for r in (KnowledgeResult.model_validate_json(t) for t in trajectories.read_text(encoding="utf-8").splitlines())
    }
    data = config.data or folder / "data"
    posts = load_split(data, config.eval_split, knowledge=False)
    if config.limit:
        posts = posts[: config.limit]
    post = posts[0] if post_id is None else next((p for p in posts if p.id == post_id), None)
    if post is None:
        raise KecpmError(f"no post {post_id!r} in the {config.eval_split} split of seed {seed}")
    result = results.get(post.id)
    lines[0] += f", post {post.id}"
    if result is None:
        return "\n".join([*lines, "(the post has no knowledge: its build failed)"])
    pipeline = config.pipeline
    store = DemonstrationStore(StoreConfig(path=config.store_dir, collection=pipeline.collection))
    demonstrations = asyncio.run(store.aselect(post, selection=pipeline.selection))
    variables, _ = prompt_variables(post, demonstrations)
    schemas = {"generate": Knowledge, "critique": Critique, "revise": Knowledge}
    knowledge: Knowledge | None = None
    previous: Knowledge | Critique | None = None
    for step in result.steps:
        stage_vars = dict(variables)
        if step.stage == "critique" and knowledge is not None:
            stage_vars["knowledge"] = format_knowledge(knowledge)
        if step.stage == "revise" and knowledge is not None and isinstance(previous, Critique):
            stage_vars["critique"] = format_critique(knowledge, previous)
        template = load_template(step.template, search_dirs=pipeline.template_dirs)
        messages = template.chat_prompt().format_messages(**stage_vars)
        key = content_key(
            stage=step.stage,
            template=template.ref,
            messages=[(m.type, m.content) for m in messages],
            schema=schemas[step.stage].model_json_schema(),
            model=pipeline.llm.model,
            params=pipeline.llm.call_params(),
        )
        check = "the prompt matches the cached call" if key == step.key else "rebuilt prompt differs from the call"
        lines += ["", f"## {step.stage} round {step.round} ({step.template}; {check})"]
        for message in messages:
            lines += [f"[{message.type}]", *str(message.content).splitlines()]
        lines.append(">>> output")
        lines += json.dumps(step.output.model_dump(), indent=1).splitlines()
        if isinstance(step.output, Knowledge):
            knowledge = step.output
        previous = step.output
    lines += ["", "## final knowledge", *result.knowledge]
    return "\n".join(lines)


def diff_cells(
    out: str | Path, cell_a: str, cell_b: str, *, post_id: str | None = None, seed: int | None = None
) -> str:
    """A unified diff of two cells' prompts and outputs for one post (see :func:`transcript`)."""
    a = transcript(out, cell_a, post_id=post_id, seed=seed).splitlines()
    b = transcript(out, cell_b, post_id=post_id, seed=seed).splitlines()
    diff = difflib.unified_diff(a, b, fromfile=cell_a, tofile=cell_b, lineterm="", n=2)
    return "\n".join(diff) or "(identical)"


# -- replay ----------------------------------------------------------------------------------------
class ReplayRow(BaseModel):
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
        root, recorded, grid = _load(experiment_manifest)
        slug, seed = path.parents[1].name, int(path.parent.name.removeprefix("seed_"))
        cells, seeds = [slug], [seed]
    else:
        root, recorded, grid = _load(path)
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
