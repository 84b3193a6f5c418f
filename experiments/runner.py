"""Running a grid: every cell on every seed through the cached ``kecpm run`` stages, sharing one store
per seed, one LLM call cache and one folder of trained extractors; then the leaderboard and manifest.

All cells share that work, so it is done once: cells differing only in the extractor make no LLM call,
and cells whose knowledge came out identical train once.

>>> result = run_experiment(Grid.from_file("examples/grid.toml"), "runs/experiments/demo")  # doctest: +SKIP
>>> result.cells[0].f1["paper_micro_f1"].mean  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..agents import (
    DEFAULT_TEMPLATES,
    KnowledgeCache,
    KnowledgeResult,
    SpendEstimate,
    SpendEstimator,
    SpendGuard,
    counter_for,
)
from ..errors import KecpmError
from ..hashing import file_sha256
from ..pipeline import Manifest, RunConfig, estimate_method, run_method
from ..post_files import load_split
from .grid import Grid
from .leaderboard import write_leaderboard
from .quality import knowledge_quality
from .results import ExperimentResult, SeedRun, summarize

__all__ = ["Event", "estimate_experiment", "run_experiment"]

Event = Callable[[str, int, str, str, float], None]
"""``on_event(cell, seed, stage, status, seconds)``: progress of :func:`run_experiment`."""


def run_experiment(
    grid: Grid,
    out: str | Path,
    *,
    cells: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    on_event: Event | None = None,
    leaderboard: bool = True,
    shared: str | Path | None = None,
    spend: SpendGuard | None = None,
    ray: str | None = None,
) -> ExperimentResult:
    """Run every cell (or those named in ``cells``) on every seed; write the leaderboard and manifest.

    Work is shared through ``shared`` (default ``OUT/shared``; give another experiment's to build on its
    work): one store per seed, one LLM call cache, one folder of trained extractors. A rerun into the
    same ``out`` skips every finished stage. ``spend`` holds the whole experiment under one budget: a
    run it stops raises :class:`~kecpm.agents.BudgetStopped` (a rerun with a higher one resumes).


    With ``ray`` (auto, local or HOST:PORT) every cell x seed is a Ray task, all at once: they share the
    store and extractor folders (locked, so each is built once) and one call cache through the cluster's
    cache actor (so a call is paid once; ``pipeline.concurrency`` and ``cluster.requests_per_second``
    hold for all tasks together); a task lost with its node is run again and resumes from those caches.
    ``on_event`` then hears of each run when it finishes (stage ``run``).
    """
    out = Path(out)
    shared = Path(shared) if shared is not None else out / "shared"
    chosen = _chosen_cells(grid, cells)
    started = time.perf_counter()
    jobs = {
        (cell.name, seed): grid.run_config(cell, seed, out=out / "cells" / cell.slug / f"seed_{seed}", shared=shared)
        for cell in chosen
        for seed in seeds or grid.seeds
    }
    if ray is None:
        runs = {
            (name, seed): _run_one(config, out, name, seed, on_event, spend) for (name, seed), config in jobs.items()
        }
    elif spend is not None:
        raise KecpmError("a budget is not held across a Ray cluster's tasks yet: run the grid with --ray or a budget")
    else:
        runs = _run_on_cluster(ray, jobs, out, on_event)
    summaries = []
    for cell in chosen:
        cell_runs = [runs[key] for key in jobs if key[0] == cell.name]
        last = [config for key, config in jobs.items() if key[0] == cell.name][-1]
        summaries.append(summarize(cell, last, cell_runs))
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


def _run_on_cluster(
    address: str, jobs: dict[tuple[str, int], RunConfig], root: Path, on_event: Event | None
) -> dict[tuple[str, int], SeedRun]:
    from ..pipeline.cluster import ray_session
    from ..pipeline.cluster_cache import SharedCache, start_cache_actor

    first = next(iter(jobs.values()))
    pipeline = first.pipeline
    runs: dict[tuple[str, int], SeedRun] = {}
    with ray_session(address) as ray:
        actor = start_cache_actor(
            first.knowledge_cache or first.out / "knowledge.sqlite",
            lease_s=pipeline.cluster.lease_s,
            concurrency=pipeline.concurrency,
            requests_per_second=pipeline.cluster.requests_per_second,
        )
        try:
            cache = SharedCache(actor)
            task = ray.remote(_run_task).options(num_cpus=pipeline.cluster.cpus_per_worker, max_retries=-1)
            # Settings travel as JSON: an API key (never dumped) stays out of the cluster's object store.
            pending = {
                task.remote(config.model_dump(mode="json"), str(root), name, seed, cache): (name, seed)
                for (name, seed), config in jobs.items()
            }
            while pending:
                (done,), _ = ray.wait(list(pending), num_returns=1)
                name, seed = pending.pop(done)
                runs[name, seed] = SeedRun.model_validate(ray.get(done))
                if on_event is not None:
                    on_event(name, seed, "run", "done", runs[name, seed].seconds)
        finally:
            ray.get(actor.close.remote())
            ray.kill(actor, no_restart=True)
    return runs


def _run_task(config: dict, root: str, cell: str, seed: int, cache: object) -> dict:
    """One cell x seed as a Ray task (through the cluster's shared call cache)."""
    return _run_one(RunConfig.model_validate(config), Path(root), cell, seed, None, cache=cache).model_dump(mode="json")


def estimate_experiment(
    grid: Grid,
    out: str | Path,
    *,
    cells: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    on_event: Event | None = None,
    shared: str | Path | None = None,
) -> SpendEstimate:
    """What :func:`run_experiment` would send to the LLM over every cell and seed, sending nothing; a call
    that several runs share (through the one call cache) is counted once."""
    out = Path(out)
    shared = Path(shared) if shared is not None else out / "shared"
    into: SpendEstimator | None = None
    for cell in _chosen_cells(grid, cells):
        for seed in seeds or grid.seeds:
            config = grid.run_config(cell, seed, out=out / "cells" / cell.slug / f"seed_{seed}", shared=shared)

            def on_stage(stage: str, status: str, seconds: float, name: str = cell.name, number: int = seed) -> None:
                if on_event is not None:
                    on_event(name, number, stage, status, seconds)

            if into is None and config.knowledge == "llm":
                llm = config.pipeline.llm
                into = SpendEstimator(
                    counter=counter_for(llm),
                    prices=(llm.input_price, llm.output_price),
                    max_output_tokens=llm.max_tokens,
                )
            estimate_method(config, on_stage=on_stage, into=into)
    return into.estimate if into is not None else SpendEstimate()


def _chosen_cells(grid: Grid, cells: Sequence[str] | None) -> list:
    grid.check()
    chosen = grid.cells()
    if cells is not None:
        chosen = [c for c in chosen if c.name in cells or c.slug in cells]
        if not chosen:
            raise KecpmError(f"no cell named {', '.join(cells)} in the grid")
    return chosen


def _run_one(
    config: RunConfig,
    root: Path,
    cell: str,
    seed: int,
    on_event: Event | None,
    spend: SpendGuard | None = None,
    *,
    cache: object = None,
) -> SeedRun:
    statuses: dict[str, str] = {}

    def on_stage(stage: str, status: str, seconds: float) -> None:
        if status != "running":
            statuses[stage] = status
        if on_event is not None:
            on_event(cell, seed, stage, status, seconds)

    started = time.perf_counter()
    result = run_method(config, on_stage=on_stage, spend=spend, cache=cache)
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
        with contextlib.ExitStack() as stack:
            calls = cache or stack.enter_context(
                KnowledgeCache(config.knowledge_cache or config.out / "knowledge.sqlite")
            )
            for item in results:
                for step in item.steps:
                    run.calls_needed += 1
                    if (call := calls.get_call(step.key)) is not None:  # type: ignore[attr-defined]
                        run.input_tokens += call.input_tokens
                        run.output_tokens += call.output_tokens
        run.cost = llm.cost(run.input_tokens, run.output_tokens)
    return run


def _write_manifest(result: ExperimentResult) -> Path:
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
    refs: dict[str, set[str]] = {}
    for cell in grid.cells():
        config = grid.run_config(cell, grid.seeds[0], out=Path("."))
        for stage, ref in {**DEFAULT_TEMPLATES, **config.pipeline.templates}.items():
            refs.setdefault(stage, set()).add(ref)
        refs.setdefault("extract_input", set()).add(config.input_template)
    return {stage: ", ".join(sorted(values)) for stage, values in refs.items()}
