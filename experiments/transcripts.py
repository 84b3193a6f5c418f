"""Transcripts of an experiment: one cell's prompts and outputs for one post, rebuilt from its templates,
the post and its demonstrations and checked against the cached calls; and the diff of two cells.

>>> print(diff_cells("runs/experiments/demo", "generate=v1 k=1", "generate=v2 k=1"))  # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

from ..agents import Critique, Knowledge, KnowledgeResult, call_key, format_critique, format_knowledge, prompt_variables
from ..aio import run_sync
from ..errors import KecpmError
from ..pipeline import Manifest, RetrieveDemonstrations
from ..post_files import load_split
from ..prompts import load_template
from .grid import Grid

__all__ = ["diff_cells", "load_experiment", "transcript"]


def load_experiment(out: str | Path) -> tuple[Path, Manifest, Grid]:
    """An experiment's folder, its manifest and its grid, from the folder or its ``manifest.json``."""
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
    root, manifest, grid = load_experiment(out)
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
    pipeline = config.pipeline.model_copy(update={"store": str(config.store_dir)})
    demonstrations = run_sync(RetrieveDemonstrations(pipeline)(post))
    variables, _ = prompt_variables(post, demonstrations)
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
        key = call_key(step.stage, template.ref, messages, model=pipeline.llm.model, params=pipeline.llm.call_params())
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
