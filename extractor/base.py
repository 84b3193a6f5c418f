"""What every extractor shares: the interface, the training loop with early stopping, and checkpoints.

A checkpoint is a directory (``save_pretrained`` style): ``extractor.json`` (format version, model
family, model and training configs, label maps, the input template used, the training report) and
the weights and tokenizer files of the family. :func:`load_extractor` reads any of them back.
"""

from __future__ import annotations

import asyncio
import copy
import ctypes
import json
import logging
import random
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field

from ..errors import KecpmError
from ..labels import ENTITY_TYPES, RELATIONS
from ..prompts import PromptMessage, PromptTemplateFile
from ..records import Post, Quintuple
from .inputs import InputParts

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "CheckpointError",
    "EpochLog",
    "Extractor",
    "FitReport",
    "Scorer",
    "TrainConfig",
    "load_extractor",
]

logger = logging.getLogger("kecpm.extractor")

FORMAT_VERSION = 1
MANIFEST = "extractor.json"

Scorer = Callable[[Sequence[Post], Sequence[Sequence[Quintuple]]], float]
"""``scorer(gold_posts, predictions) -> float``, higher is better (e.g. ``kecpm.eval.make_scorer()``)."""


class CheckpointError(KecpmError):
    """A model directory that cannot be loaded: missing files, another format version or family,
    or labels this kecpm does not know."""


class TrainConfig(BaseModel):
    """How to train; the defaults are the ones chosen on the real validation splits (see README)."""

    model_config = ConfigDict(frozen=True)

    epochs: int = Field(default=20, ge=1)
    batch_size: int = Field(default=16, ge=1)
    learning_rate: float = Field(default=1e-4, gt=0, description="of the pretrained weights")
    head_learning_rate: float = Field(default=1e-3, gt=0, description="of the new layers (span-pair model)")
    weight_decay: float = 0.01
    warmup_ratio: float = Field(default=0.1, ge=0, le=1)
    max_grad_norm: float = 1.0
    patience: int = Field(default=6, ge=1, description="epochs without a better val score before stopping")
    seed: int = 17
    eval_batch_size: int = Field(default=64, ge=1)
    threads: int | None = Field(default=None, description="torch threads; None leaves torch's setting")
    return_freed_memory: bool = Field(
        default=True,
        description="glibc, while training: serve blocks >= 1 MiB by mmap so freed ones leave the process "
        "(peak RSS 1.9 instead of 3.3 GB on real data, epochs about 40 % slower)",
    )


class EpochLog(BaseModel):
    epoch: int
    loss: float
    val_score: float
    seconds: float


class FitReport(BaseModel):
    """What a training run did: the best val score, when it was reached, and every epoch."""

    best_score: float = float("-inf")
    best_epoch: int = 0
    seconds_to_best: float = 0.0
    seconds: float = 0.0
    history: list[EpochLog] = Field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels (CPU runs repeat exactly)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def return_freed_memory(on: bool = True) -> bool:
    """While training, have glibc's malloc serve blocks of 1 MiB or more by ``mmap``, so that freed ones
    go back to the OS; ``on=False`` (after training) moves the threshold to 32 MiB again.

    glibc raises its mmap threshold after each large free; training then allocates activations of
    ever-changing sizes from the heap and fragments it: a fit on real data grew to 3.3 GB RSS, against
    1.9 GB with this, for epochs about 40 % slower (page faults of fresh mappings; README). Prediction
    does not fragment, and runs at full speed with the 32 MiB threshold. Process-wide; False where
    there is no glibc to tune.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, (1 if on else 32) << 20))
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False


_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h


def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Extractor(ABC):
    """The interface of both model families: ``fit``, ``predict``, ``apredict``, ``save``, ``load``."""

    family: ClassVar[str]
    inference_only: bool = False
    """True for a copy made only to predict (e.g. :meth:`SpanPairExtractor.quantized`)."""

    def __init__(self) -> None:
        self.report: FitReport | None = None

    def _check_trainable(self, action: str) -> None:
        if self.inference_only:
            raise RuntimeError(f"cannot {action} an inference-only copy (int8): {action} the float model instead")

    # -- what a family implements ------------------------------------------------------------
    @abstractmethod
    def _prepare(self, train: Sequence[Post]) -> None:
        """Build the network and label maps before the first epoch (nothing when already built)."""

    @abstractmethod
    def _examples(self, posts: Sequence[Post]) -> list[Any]:
        """Encode posts once per fit into whatever ``_loss`` takes."""

    @abstractmethod
    def _parameter_groups(self, config: TrainConfig) -> list[dict[str, Any]]: ...

    @abstractmethod
    def _loss(self, examples: Sequence[Any]) -> Any:
        """The training loss (a scalar tensor) of one batch."""

    @abstractmethod
    def predict(self, posts: Sequence[Post], *, batch_size: int = 64, progress: bool = False) -> list[list[Quintuple]]:
        """The quintuples of each post, in order."""

    @abstractmethod
    def _network(self) -> Any:
        """The torch module whose state is the model."""

    @abstractmethod
    def _save_files(self, directory: Path) -> dict[str, Any]:
        """Write weights and tokenizer; return the family's manifest entries."""

    @classmethod
    @abstractmethod
    def _load_files(cls, directory: Path, manifest: dict[str, Any]) -> Self: ...

    # -- shared --------------------------------------------------------------------------------
    def fit(
        self,
        train: Sequence[Post],
        val: Sequence[Post],
        *,
        scorer: Scorer,
        config: TrainConfig | None = None,
        checkpoint_dir: str | Path | None = None,
        progress: bool = True,
    ) -> FitReport:
        """Train on ``train``, keep the weights with the best ``scorer`` on ``val`` (early stopping).

        The best weights are restored at the end and, with ``checkpoint_dir``, saved there each
        time the val score improves. Same seed and data give the same scores on CPU.

        >>> model = SpanPairExtractor()  # doctest: +SKIP
        >>> report = model.fit(train, val, scorer=kecpm.eval.make_scorer(mode="paper"))  # doctest: +SKIP
        """
        import torch

        self._check_trainable("train")
        config = config or TrainConfig()
        if not train:
            raise ValueError("fit needs at least one training post")
        if not val:
            raise ValueError("fit needs validation posts: early stopping selects on them")
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        if config.return_freed_memory:
            return_freed_memory()
        try:
            return self._fit(train, val, scorer=scorer, config=config, checkpoint_dir=checkpoint_dir, progress=progress)
        finally:
            if config.return_freed_memory:
                return_freed_memory(False)

    def _fit(
        self,
        train: Sequence[Post],
        val: Sequence[Post],
        *,
        scorer: Scorer,
        config: TrainConfig,
        checkpoint_dir: str | Path | None,
        progress: bool,
    ) -> FitReport:
        import torch
        from tqdm.auto import tqdm

        seed_everything(config.seed)
        self._prepare(train)
        self.train_config = config
        examples = self._examples(train)
        network = self._network()
        optimizer = torch.optim.AdamW(self._parameter_groups(config), weight_decay=config.weight_decay)
        steps = config.epochs * -(-len(examples) // config.batch_size)
        warmup = int(steps * config.warmup_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min((step + 1) / max(warmup, 1), max(0.0, (steps - step) / max(steps - warmup, 1)))
        )
        generator = torch.Generator().manual_seed(config.seed)
        report = FitReport()
        best_state: dict[str, Any] | None = None
        started = time.perf_counter()
        for epoch in range(1, config.epochs + 1):
            network.train()
            order = torch.randperm(len(examples), generator=generator).tolist()
            total, count = 0.0, 0
            bar = tqdm(
                list(batches(order, config.batch_size)), desc=f"epoch {epoch}/{config.epochs}", disable=not progress
            )
            for batch in bar:
                loss = self._loss([examples[i] for i in batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(network.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                total += float(loss.detach()) * len(batch)
                count += len(batch)
                bar.set_postfix(loss=f"{total / count:.4f}")
            score = float(scorer(val, self.predict(val, batch_size=config.eval_batch_size)))
            elapsed = time.perf_counter() - started
            report.history.append(EpochLog(epoch=epoch, loss=total / count, val_score=score, seconds=elapsed))
            logger.info("epoch %d: loss %.4f, val %.4f (%.0f s)", epoch, total / count, score, elapsed)
            if progress:
                tqdm.write(f"epoch {epoch}: loss {total / count:.4f}  val {score:.4f}  ({elapsed:.0f} s)")
            if score > report.best_score:
                report.best_score, report.best_epoch, report.seconds_to_best = score, epoch, elapsed
                best_state = copy.deepcopy(network.state_dict())
                self.report = report
                if checkpoint_dir is not None:
                    self.save(checkpoint_dir)
            elif epoch - report.best_epoch >= config.patience:
                logger.info("early stop after epoch %d: no better val score for %d epochs", epoch, config.patience)
                break
        if best_state is not None:
            network.load_state_dict(best_state)
        report.seconds = time.perf_counter() - started
        self.report = report
        if checkpoint_dir is not None:
            self.save(checkpoint_dir)
        return report

    async def apredict(
        self, posts: Sequence[Post], *, batch_size: int = 64, progress: bool = False
    ) -> list[list[Quintuple]]:
        """:meth:`predict` in a worker thread, so the event loop stays free while torch works."""
        return await asyncio.to_thread(self.predict, posts, batch_size=batch_size, progress=progress)

    def save(self, directory: str | Path) -> Path:
        """Write the model to ``directory`` (created); :func:`load_extractor` reads it back."""
        self._check_trainable("save")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format_version": FORMAT_VERSION,
            "family": self.family,
            "entity_types": [t.value for t in ENTITY_TYPES],
            "relations": [r.value for r in RELATIONS],
            "template": self.assembler.template.model_dump(mode="json", exclude={"path"}),
            "parts": self.assembler.parts.model_dump(mode="json"),
            "train_config": self.train_config.model_dump(mode="json") if self.train_config else None,
            "report": self.report.model_dump(mode="json") if self.report else None,
            **self._save_files(directory),
        }
        (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """Read a model saved by :meth:`save`; :class:`CheckpointError` says what is wrong."""
        directory = Path(directory)
        manifest = read_manifest(directory)
        if manifest.get("family") != cls.family:
            raise CheckpointError(f"{directory}: a {manifest.get('family')!r} model, not a {cls.family!r} one")
        model = cls._load_files(directory, manifest)
        model.train_config = TrainConfig(**manifest["train_config"]) if manifest.get("train_config") else None
        model.report = FitReport(**manifest["report"]) if manifest.get("report") else None
        return model

    assembler: Any
    train_config: TrainConfig | None = None


def template_from_manifest(manifest: dict[str, Any]) -> PromptTemplateFile:
    data = manifest["template"]
    return PromptTemplateFile(
        name=data["name"],
        version=data["version"],
        description=data.get("description", ""),
        messages=tuple(PromptMessage(**m) for m in data["messages"]),
    )


def parts_from_manifest(manifest: dict[str, Any]) -> InputParts:
    return InputParts(**manifest["parts"])


def read_manifest(directory: Path) -> dict[str, Any]:
    """The checked manifest of a model directory."""
    path = directory / MANIFEST
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such model directory")
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a kecpm extractor directory ({MANIFEST} is missing)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc.msg})") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{directory}: format version {version!r}, but this kecpm reads version {FORMAT_VERSION}; "
            "retrain the model or use the kecpm version that wrote it"
        )
    for key, known in (("entity_types", [t.value for t in ENTITY_TYPES]), ("relations", [r.value for r in RELATIONS])):
        unknown = [label for label in manifest.get(key, []) if label not in known]
        if unknown or manifest.get(key) != known:
            raise CheckpointError(
                f"{directory}: its {key.replace('_', ' ')} {manifest.get(key)} differ from this kecpm's {known}"
                + (f" (unknown: {unknown})" if unknown else "")
            )
    for name in manifest.get("files", []):
        if not (directory / name).exists():
            raise CheckpointError(f"{directory}: {name} is missing")
    return manifest


def load_extractor(directory: str | Path) -> Extractor:
    """Load a saved extractor of either family.

    >>> model = load_extractor("runs/seed17/model")  # doctest: +SKIP
    >>> model.predict(posts)  # doctest: +SKIP
    """
    from .generative import GenerativeExtractor
    from .span_model import SpanPairExtractor

    directory = Path(directory)
    family = read_manifest(directory).get("family")
    for cls in (SpanPairExtractor, GenerativeExtractor):
        if cls.family == family:
            return cls.load(directory)
    raise CheckpointError(f"{directory}: unknown model family {family!r}")
