"""``kecpm run``: the whole method on a data set, stage by stage, each stage cached and resumable.

index (demonstration store) -> knowledge (LLM, every call cached) -> train (extractor, early stopping
on val) -> predict -> eval, with a manifest of config, data hashes, model ids, template versions and
git revision next to the results. A stage whose inputs and settings are unchanged since it last
finished is skipped; an interrupted knowledge stage resumes from its cache without repeating a call.

Its stages over many posts are the pipeline's: :class:`~kecpm.pipeline.stages.RetrieveDemonstrations`
and :func:`~kecpm.pipeline.stages.knowledge_builder` build the knowledge,
:class:`~kecpm.pipeline.stages.ExtractQuintuples` predicts. A post without an image description is
indexed, retrieved and extracted by its text alone, and counted in ``stages.json`` and the manifest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..agents import BudgetStopped, SpendEstimate, SpendEstimator, SpendGuard
from ..aio import run_sync
from ..errors import KecpmError
from ..hashing import content_key, file_sha256
from ..post_files import load_split, read_kecpm, write_kecpm
from ..records import Demonstration, Post
from .config import PipelineConfig
from .manifest import Manifest
from .stages import ExtractQuintuples, RetrieveDemonstrations, knowledge_builder

__all__ = ["RunConfig", "RunResult", "estimate_method", "run_method"]

STAGES = ("data", "index", "knowledge", "train", "predict", "eval")

log = logging.getLogger(__name__)


class RunConfig(BaseModel):
    """What ``kecpm run`` does. ``data`` is a KECPM seed folder (``train.json``, ``val.json`` and their
    caption files); without it, a synthetic sample is written and used."""

    out: Path
    data: Path | None = None
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    pool: Literal["train", "human"] = Field(default="train", description="which demonstrations to index")
    knowledge: Literal["llm", "released", "none"] = Field(
        default="llm", description="llm: build it; released: the authors' ChatGPT files; none"
    )
    eval_split: str = Field(default="val", description="the split predicted and scored (select on val)")
    parts: str = Field(default="imagecap_know", description="extractor input preset")
    input_template: str = Field(default="extract_input@v1", description="extractor input template (name@vN)")
    knowledge_sentences: int | None = Field(default=None, ge=1, description="knowledge sentences the extractor reads")
    knowledge_filter: Literal["all", "naming_post"] = Field(
        default="all", description="which knowledge sentences the extractor reads (extractor.InputParts)"
    )
    epochs: int = Field(default=30, ge=1)
    patience: int = Field(default=6, ge=1)
    seed: int = 17
    limit: int | None = Field(default=None, ge=1, description="only the first N posts of each split")
    synthetic_size: tuple[int, int] = Field(default=(42, 21), description="synthetic train and val posts")
    store_dir: Path | None = Field(
        default=None,
        description="where the store lives (default: OUT/store); runs that index the same demonstrations may share one",
    )
    knowledge_cache: Path | None = Field(
        default=None,
        description="the LLM call cache (default: OUT/knowledge.sqlite); runs sharing it never pay for a call twice",
    )
    model_cache: Path | None = Field(
        default=None,
        description="a folder of trained extractors by training inputs (OUT/model links to one); runs sharing it "
        "train each distinct input once",
    )


class RunResult(BaseModel):
    out: Path
    predictions: Path
    report: Path
    manifest: Path
    scores: dict[str, float]
    stages: dict[str, dict[str, Any]]
    text_only_posts: dict[str, int] = Field(
        default_factory=dict, description="posts without an image description (read by text alone), per split"
    )


StageCallback = Callable[[str, str, float], None]


def run_method(
    config: RunConfig, *, on_stage: StageCallback | None = None, spend: SpendGuard | None = None, cache: Any = None
) -> RunResult:
    """Run every stage (skipping those already done with the same inputs); see the module docs.

    ``spend`` is a guard shared with other runs (an experiment's); without one, ``config.pipeline.budget``
    (if set) holds. A run the budget stops raises :class:`~kecpm.agents.BudgetStopped` after the
    knowledge stage, with everything finished cached. With ``pipeline.ray`` set, knowledge and prediction
    run on that Ray cluster; ``cache`` is an open call cache used instead of the configured file (a
    cluster's shared cache, for an experiment's tasks)."""
    return _Run(config, on_stage or (lambda stage, status, seconds: None), spend, cache=cache).run()


def estimate_method(
    config: RunConfig, *, on_stage: StageCallback | None = None, into: SpendEstimator | None = None
) -> SpendEstimate:
    """What :func:`run_method` would send to the LLM, sending nothing (a dry run of the knowledge stage;
    the data and index stages, local and free, run for real so that the prompts hold the real
    demonstrations). ``into`` adds this run to another estimate (calls shared are counted once)."""
    return _Run(config, on_stage or (lambda stage, status, seconds: None), None).estimate(into)


def _stage_key(stage: str, *parts: Any) -> str:
    """The key a stage is filed under: what it was run on and with (a changed part reruns it)."""
    return content_key(stage=stage, parts=list(parts))[:16]


class _Run:
    def __init__(
        self, config: RunConfig, on_stage: StageCallback, spend: SpendGuard | None, *, cache: Any = None
    ) -> None:
        self.config = config
        self.spend = spend
        self.cache = cache
        self.out = config.out
        self.on_stage = on_stage
        self.stages_path = self.out / "stages.json"
        self.stages: dict[str, dict[str, Any]] = (
            json.loads(self.stages_path.read_text(encoding="utf-8")) if self.stages_path.exists() else {}
        )
        self.store_dir = config.store_dir or self.out / "store"
        pipeline = config.pipeline.model_copy(
            update={
                "store": str(self.store_dir),
                "knowledge_cache": config.knowledge_cache or self.out / "knowledge.sqlite",
                "extractor": self.out / "model",
            }
        )
        self.pipeline = pipeline
        self.files: dict[str, Path] = {}

    # -- bookkeeping -------------------------------------------------------------------------------
    def _stage(self, name: str, key: str, outputs: Sequence[Path], work: Callable[[], dict[str, Any] | None]) -> None:
        done = self.stages.get(name, {})
        if done.get("key") == key and all(p.exists() for p in outputs):
            self.on_stage(name, "cached", 0.0)
            return
        self.on_stage(name, "running", 0.0)
        started = time.perf_counter()
        details = work() or {}
        seconds = time.perf_counter() - started
        self.stages[name] = {"key": key, "seconds": round(seconds, 3), **details}
        self.out.mkdir(parents=True, exist_ok=True)
        self.stages_path.write_text(json.dumps(self.stages, indent=2) + "\n", encoding="utf-8")
        self.on_stage(name, "done", seconds)

    def run(self) -> RunResult:
        self.out.mkdir(parents=True, exist_ok=True)
        train, val = self._data()
        self._index(train)
        train, val = self._knowledge(train, val)
        self._train(train, val)
        predictions = self._predict(val)
        scores = self._eval(predictions)
        manifest = self._manifest()
        return RunResult(
            out=self.out,
            predictions=predictions,
            report=self.out / "eval" / "report.md",
            manifest=manifest,
            scores=scores,
            stages=self.stages,
            text_only_posts=self.text_only,
        )

    def estimate(self, into: SpendEstimator | None) -> SpendEstimate:
        self.out.mkdir(parents=True, exist_ok=True)
        train, val = self._data()
        self._index(train)
        if self.config.knowledge != "llm":
            return into.estimate if into is not None else SpendEstimate()
        builder = knowledge_builder(self.pipeline)
        return run_sync(builder.aestimate([*train, *val], RetrieveDemonstrations(self.pipeline), into=into))

    # -- stages ------------------------------------------------------------------------------------
    def _data(self) -> tuple[list[Post], list[Post]]:
        config = self.config
        if config.data is None:
            from ..synthetic import synthetic_posts

            folder = self.out / "data"
            n_train, n_val = config.synthetic_size

            def write() -> dict[str, Any]:
                for split, seed, n in (("train", config.seed, n_train), (config.eval_split, config.seed + 1, n_val)):
                    posts = synthetic_posts(n, seed=seed, id_prefix=f"synthetic-{split}")
                    write_kecpm(posts, folder / f"{split}.json")
                    write_kecpm(posts, folder / f"{split}_ofa_image_caption.json")
                return {"synthetic": True}

            key = _stage_key("data", "synthetic", n_train, n_val, config.seed)
            self._stage("data", key, [folder / "train.json"], write)
        else:
            folder = config.data
            if not (folder / "train.json").is_file():
                raise KecpmError(f"{folder}: not a KECPM seed folder (no train.json)")
            self.on_stage("data", "read", 0.0)
        self.data_dir = folder
        with_released = config.knowledge == "released"
        train = load_split(folder, "train", knowledge=with_released)
        val = load_split(folder, config.eval_split, knowledge=with_released)
        if config.limit:
            train, val = train[: config.limit], val[: config.limit]
        # Posts without an image description are indexed, retrieved and read by their text alone.
        self.text_only = {"train": sum(not p.image_description for p in train)}
        self.text_only["eval"] = sum(not p.image_description for p in val)
        if any(self.text_only.values()):
            log.warning(
                "posts without an image description (read by their text alone): %d of %d train, %d of %d %s",
                self.text_only["train"], len(train), self.text_only["eval"], len(val), config.eval_split,
            )  # fmt: skip
        self.files["train"] = folder / "train.json"
        self.files["eval"] = folder / f"{config.eval_split}.json"
        return train, val

    def _inputs_key(self) -> list[str]:
        return [file_sha256(p) for p in (self.files["train"], self.files["eval"])] + [str(self.config.limit)]

    def _index(self, train: list[Post]) -> None:
        import shutil

        from ..retrieval import DemonstrationStore, StoreConfig, load_pool

        config = self.config
        store_dir = self.store_dir
        key = _stage_key("index", config.pool, self._inputs_key(), self.pipeline.collection)
        # The marker lives in the store, so runs sharing a store build it once.
        marker = store_dir / "kecpm-index.json"
        if marker.exists() and json.loads(marker.read_text(encoding="utf-8")).get("key") == key:
            self.stages["index"] = json.loads(marker.read_text(encoding="utf-8"))
            self.on_stage("index", "cached", 0.0)
            return

        def build() -> dict[str, Any]:
            with _locked(store_dir.with_name(store_dir.name + ".lock")):
                # Another run sharing the store (an experiment's task) may have built it while this one waited.
                if marker.exists() and (done := json.loads(marker.read_text(encoding="utf-8"))).get("key") == key:
                    return {k: v for k, v in done.items() if k != "key"}
                return index()

        def index() -> dict[str, Any]:
            if config.pool == "human":
                demonstrations = load_pool("human", data_dir=_data_root(self.data_dir))
            else:
                demonstrations = [Demonstration.from_post(p, source="train") for p in train]
            shutil.rmtree(store_dir, ignore_errors=True)
            store = DemonstrationStore(StoreConfig(path=store_dir, collection=self.pipeline.collection), create=True)
            report = store.add(demonstrations)
            details = {"demonstrations": len(report.added), "text_only_demonstrations": len(report.text_only)}
            if report.text_only:
                log.warning("%d demonstrations have no image description: indexed by text alone", len(report.text_only))
            marker.write_text(json.dumps({"key": key, **details}) + "\n", encoding="utf-8")
            return details

        self._stage("index", key, [marker], build)

    def _knowledge(self, train: list[Post], val: list[Post]) -> tuple[list[Post], list[Post]]:
        config = self.config
        if config.knowledge != "llm":
            if config.knowledge == "none":
                train = [p.model_copy(update={"knowledge": []}) for p in train]
                val = [p.model_copy(update={"knowledge": []}) for p in val]
            self.on_stage("knowledge", config.knowledge, 0.0)
            return train, val
        folder = self.out / "knowledge"
        paths = {
            "train": folder / "train_ofa_knowledge.json",
            "eval": folder / f"{config.eval_split}_ofa_knowledge.json",
            # Every post's generate/critique/revise steps, read by experiments' quality signals and diffs.
            "trajectories": folder / "trajectories.jsonl",
        }
        pipeline = self.pipeline
        key = _stage_key(
            "knowledge",
            self._inputs_key(),
            pipeline.llm.call_params(),
            pipeline.rounds,
            pipeline.templates,
            pipeline.selection.model_dump(),
            self.stages.get("index", {}).get("key"),
        )

        def build() -> dict[str, Any]:
            return run_sync(self._build_knowledge(train, val, paths))

        self._stage("knowledge", key, list(paths.values()), build)
        return read_kecpm(paths["train"]), read_kecpm(paths["eval"])

    async def _build_knowledge(self, train: list[Post], val: list[Post], paths: dict[str, Path]) -> dict[str, Any]:
        pipeline = self.pipeline
        retrieve = RetrieveDemonstrations(pipeline)
        report = None
        if pipeline.ray is not None and self.cache is None:
            from .cluster_knowledge import build_knowledge_on_cluster

            report = await asyncio.to_thread(build_knowledge_on_cluster, pipeline, [*train, *val], progress=True)
            retrieve.text_only = report.text_only_posts
        builder = knowledge_builder(
            pipeline, progress=True, server_log=self.out / "llm_server.log", spend=self.spend, cache=self.cache
        )
        async with builder:  # on a cluster: only for the run key and the export from the shared cache
            if report is None:
                report = await builder.abuild([*train, *val], retrieve, keep_results=False)
            if report.left:  # the stage is not done: a rerun with a higher budget resumes it from the cache
                assert report.spend is not None
                raise BudgetStopped(report.spend, done=report.succeeded, left=len(report.left))
            assert builder.cache is not None and builder.chain is not None
            missing: list[str] = []
            for posts, path in ((train, paths["train"]), (val, paths["eval"])):
                missing += builder.cache.export_kecpm(posts, path, run=builder.run_key)[1]
            # Results are filed per run key, which runs with other demonstrations share: copy them now.
            with paths["trajectories"].open("w", encoding="utf-8") as handle:
                for post in [*train, *val]:
                    if (found := builder.cache.result(post.id, builder.run_key)) is not None:
                        handle.write(found.model_dump_json() + "\n")
            self.templates = {stage: t.ref for stage, t in builder.chain.templates.items()}
        if report.failures:
            (self.out / "knowledge_failures.json").write_text(
                json.dumps([f.model_dump() for f in report.failures], indent=2) + "\n", encoding="utf-8"
            )
        return {
            "run": builder.run_key,
            "posts": report.total,
            "failed": report.failed,
            "without_knowledge": len(missing),
            "text_only_posts": retrieve.text_only,
            "calls": report.calls,
            "cached_calls": report.cached,
            "templates": self.templates,
        }

    def _train(self, train: list[Post], val: list[Post]) -> None:
        from ..eval import make_scorer
        from ..extractor import InputParts, SpanPairConfig, SpanPairExtractor, TrainConfig
        from ..extractor.checkpoint import CONFIG_FILE
        from ..prompts import load_template

        config = self.config
        model_dir = self.out / "model"
        train_config = TrainConfig(epochs=config.epochs, patience=config.patience, seed=config.seed)
        key = _stage_key(
            "train",
            [p.model_dump(mode="json") for p in train],
            [p.model_dump(mode="json") for p in val],
            config.parts,
            config.knowledge_sentences,
            config.knowledge_filter,
            config.input_template,
            # the model's and training's defaults: a kecpm that changes them trains again
            SpanPairConfig().model_dump(mode="json"),
            train_config.model_dump(mode="json"),
        )

        def fit_into(folder: Path) -> dict[str, Any]:
            parts = InputParts.preset(config.parts).model_copy(
                update={"knowledge_sentences": config.knowledge_sentences, "knowledge_filter": config.knowledge_filter}
            )
            template = load_template(config.input_template, search_dirs=self.pipeline.template_dirs)
            model = SpanPairExtractor(parts=parts, template=template)
            report = model.fit(
                train,
                val,
                scorer=make_scorer(mode="paper", metric="micro_f1"),
                config=train_config,
                data_files={"train": self.files["train"]},
            )
            _remove(folder)
            model.save(folder)
            return {"best_val_micro_f1": report.best_score, "best_epoch": report.best_epoch}

        def fit() -> dict[str, Any]:
            if config.model_cache is None:
                return fit_into(model_dir)
            shared = config.model_cache / key
            record = shared / "kecpm-fit.json"  # written last: its presence means the model is complete
            config.model_cache.mkdir(parents=True, exist_ok=True)
            # Runs training the same inputs at once (an experiment's tasks) train it once: the others wait.
            with _locked(config.model_cache / f"{key}.lock"):
                reused = record.exists()
                if not reused:
                    record.parent.mkdir(parents=True, exist_ok=True)
                    details = fit_into(shared)
                    record.write_text(json.dumps(details) + "\n", encoding="utf-8")
            _remove(model_dir)
            # A relative link, so a moved or copied run folder still finds its model.
            model_dir.symlink_to(
                os.path.relpath(shared.resolve(), model_dir.parent.resolve()), target_is_directory=True
            )
            return {**json.loads(record.read_text(encoding="utf-8")), "reused": reused, "model": str(shared)}

        self._stage("train", key, [model_dir / CONFIG_FILE], fit)
        self.val_posts = val

    def _predict(self, val: list[Post]) -> Path:
        from ..predictions import write_predictions

        path = self.out / "predictions.jsonl"

        def predict() -> dict[str, Any]:
            if self.pipeline.ray is not None:
                from .cluster_extract import predict_on_cluster

                predictions = predict_on_cluster(
                    self.out / "model", val, address=self.pipeline.ray, settings=self.pipeline.cluster
                )
            else:
                predictions = ExtractQuintuples(self.pipeline).predict(val)
            write_predictions(path, predictions, img_ids=[p.img_id for p in val])
            return {"posts": len(val), "text_only_posts": sum(not p.image_description for p in val)}

        key = _stage_key("predict", self.stages["train"]["key"], [p.model_dump(mode="json") for p in val])
        self._stage("predict", key, [path], predict)
        return path

    def _eval(self, predictions: Path) -> dict[str, float]:
        from ..eval import evaluate_files, write_report

        gold = self.files["eval"]
        if self.config.limit:
            gold = write_kecpm(self.val_posts, self.out / "eval" / f"gold_{self.config.eval_split}.json")
        scores: dict[str, float] = {}

        def evaluate() -> dict[str, Any]:
            for mode in ("paper", "standard"):
                report = evaluate_files([gold], [predictions], mode=mode, n_resamples=200)
                write_report(report, self.out / "eval" if mode == "paper" else self.out / "eval" / mode)
                scores[f"{mode}_micro_f1"] = report.summary["micro_f1"].mean
                scores[f"{mode}_macro_f1"] = report.summary["macro_f1"].mean
            return {"scores": scores}

        key = _stage_key("eval", file_sha256(predictions), file_sha256(gold))
        self._stage("eval", key, [self.out / "eval" / "report.md"], evaluate)
        return self.stages["eval"]["scores"]

    def _manifest(self) -> Path:
        from ..extractor import default_encoder_path

        knowledge = self.stages.get("knowledge", {})
        return Manifest.create(
            "run",
            config=self.config,
            inputs=[self.files["train"], self.files["eval"]],
            models={
                "llm": self.pipeline.llm.model if self.config.knowledge == "llm" else self.config.knowledge,
                "embeddings": "sentence-transformers/all-MiniLM-L6-v2",
                "extractor_encoder": str(default_encoder_path()),
            },
            templates={**knowledge.get("templates", {}), "extract_input": self.config.input_template},
            outputs={
                "store": self.store_dir,
                "knowledge_cache": self.pipeline.knowledge_cache or "",
                "model": self.out / "model",
                "predictions": self.out / "predictions.jsonl",
                "report": self.out / "eval" / "report.md",
            },
            extra={"stages": self.stages, "text_only_posts": self.text_only},
        ).write(self.out / "manifest.json")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created) between processes of this host, or of hosts sharing the
    folder on a file system with working locks."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove(path: Path) -> None:
    """Remove a model folder, or only the link when it links to a shared one."""
    import shutil

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _data_root(folder: Path) -> Path | None:
    """The data root above a seed folder (``DATA/jmere/few_shot/seed_17`` -> ``DATA``), if it is one."""
    parents = folder.resolve().parents
    return parents[2] if len(parents) > 2 and parents[0].name == "few_shot" else None
