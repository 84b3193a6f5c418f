"""Experiment grids: shared run settings, the seeds, and the axes whose product makes the cells.

A grid file (TOML or YAML) names the shared settings, the seeds and the axes; every combination of
axis values is a *cell*, and every cell runs once per seed through :func:`~kecpm.pipeline.run_method`::

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

>>> grid = Grid.from_file("examples/grid.toml")  # doctest: +SKIP
>>> [cell.name for cell in grid.cells()]  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import itertools
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import KecpmError
from ..pipeline import RunConfig
from ..prompts import load_template
from ..settings_file import read_settings_file, resolve_path

__all__ = ["AXES", "Cell", "Grid", "axis_label"]

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
    "knowledge_filter": "knowledge_filter",
}
"""Axis aliases -> the setting they change (a dotted path into the run's settings)."""

# Settings an axis may change: the pipeline's, and the run's that do not change the data or the seeds.
_AXIS_ROOTS = (
    "pipeline",
    "knowledge",
    "pool",
    "parts",
    "input_template",
    "knowledge_sentences",
    "knowledge_filter",
    "epochs",
    "patience",
)
_TEMPLATE_STAGES = ("generate", "critique", "revise")


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
    knowledge_filter: Literal["all", "naming_post"] = "all"
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
                labels.append(f"{axis}={axis_label(axis, value)}")
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
            "knowledge_filter": self.knowledge_filter,
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


def axis_label(axis: str, value: Any) -> str:
    """How a cell's name shows an axis value (``v2`` for ``generate@v2``)."""
    if isinstance(value, dict):
        return ",".join(f"{k}:{axis_label(k, v)}" for k, v in value.items())
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
