"""How an extractor is trained: the training config, the epoch loop with early stopping on a val score,
seeding, and the process settings (torch threads, glibc's malloc) that a training run needs.

The loop knows nothing of model families: it is given the network, the encoded examples, the loss of a
batch, the parameter groups and a function that scores the network on val.
"""

from __future__ import annotations

import copy
import ctypes
import logging
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..records import Post, Quintuple

__all__ = [
    "EpochLog",
    "FitReport",
    "Scorer",
    "TrainConfig",
    "WeightAverage",
    "batches",
    "return_freed_memory",
    "seed_everything",
    "train_with_early_stopping",
    "training_process",
]

logger = logging.getLogger("kecpm.extractor")

Scorer = Callable[[Sequence[Post], Sequence[Sequence[Quintuple]]], float]
"""``scorer(gold_posts, predictions) -> float``, higher is better (e.g. ``kecpm.eval.make_scorer()``)."""


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
    tune_thresholds: bool = Field(
        default=False,
        description="span-pair: after training, choose the entity and relation thresholds on val "
        "(SpanPairExtractor.tune_thresholds)",
    )
    weight_average: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="decay per step of an exponential moving average of the weights: validation, the kept best "
        "epoch and its checkpoint use the averaged weights, which move less from epoch to epoch than the "
        "trained ones (0: off)",
    )
    pseudo_epochs: int = Field(
        default=2,
        ge=1,
        description="self-training: epochs on the pseudo-labelled posts given to fit(pseudo=...), before the "
        "labelled ones; their last epoch is kept, val selects nothing there",
    )
    text_only_epochs: int = Field(
        default=0,
        ge=0,
        description="epochs on the training posts' text alone (image description and knowledge left out) before "
        "the full input: the network learns to read the post first, so the longer input is added to a reader "
        "that already works; their last epoch is kept, val selects nothing there (0: off)",
    )
    warm_learning_rate: float | None = Field(
        default=None,
        gt=0,
        description="learning rate of the pretrained weights in the val-selected stage when a text-only or "
        "pseudo-label stage came before it, so that stage adjusts a reader that already works rather than "
        "retraining it (None: learning_rate)",
    )
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

    metric: str | None = Field(default=None, description="the val scorer's name, e.g. paper_micro_f1")
    best_score: float = float("-inf")
    best_epoch: int = 0
    seconds_to_best: float = 0.0
    seconds: float = 0.0
    history: list[EpochLog] = Field(default_factory=list)
    pseudo_seconds: float = Field(default=0.0, description="self-training: the epochs on pseudo-labelled posts")
    text_only_seconds: float = Field(default=0.0, description="the epochs on the posts' text alone (text_only_epochs)")
    decoding: dict[str, float] = Field(
        default_factory=dict, description="decoding settings chosen on val after training (e.g. thresholds)"
    )


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


@contextmanager
def training_process(config: TrainConfig) -> Iterator[None]:
    """The process settings of a training run: torch's threads (kept) and, for the run only, glibc's
    returning of freed memory."""
    import torch

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    if config.return_freed_memory:
        return_freed_memory()
    try:
        yield
    finally:
        if config.return_freed_memory:
            return_freed_memory(False)


class WeightAverage:
    """An exponential moving average of a network's parameters, updated after each optimizer step.

    The decay is warmed up (``min(decay, (1 + t) / (10 + t))`` at update t), so the first steps' average
    is not held back by the random initial weights of new layers. ``applied()`` puts the average in the
    network for a block (to validate or save it) and the trained weights back after it.
    """

    def __init__(self, network: Any, decay: float) -> None:
        self.parameters = list(network.parameters())
        self.average = [p.detach().clone() for p in self.parameters]
        self.decay, self.updates = decay, 0

    def update(self) -> None:
        import torch

        self.updates += 1
        weight = 1 - min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            for average, parameter in zip(self.average, self.parameters, strict=True):
                average.lerp_(parameter, weight)

    @contextmanager
    def applied(self) -> Iterator[None]:
        import torch

        with torch.no_grad():
            trained = [p.detach().clone() for p in self.parameters]
            for parameter, average in zip(self.parameters, self.average, strict=True):
                parameter.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for parameter, weights in zip(self.parameters, trained, strict=True):
                    parameter.copy_(weights)


def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def train_with_early_stopping(
    network: Any,
    examples: Sequence[Any],
    *,
    loss: Callable[[Sequence[Any]], Any],
    parameter_groups: list[dict[str, Any]],
    validate: Callable[[], float],
    config: TrainConfig,
    on_best: Callable[[FitReport], None],
    progress: bool,
    metric: str | None = None,
) -> FitReport:
    """Train ``network`` (a torch module) on ``examples`` with AdamW, warmup and linear decay, and keep
    the weights of the epoch with the best ``validate()`` score, restored at the end (with
    ``config.weight_average``, those of the weights' moving average, which is what is validated).

    ``loss(batch)`` is the scalar loss of some examples; ``on_best(report)`` is called each time the val
    score improves (to save a checkpoint). Stops after ``config.patience`` epochs without a better score.
    ``metric`` names the score in the report.
    """
    import torch
    from tqdm.auto import tqdm

    optimizer = torch.optim.AdamW(parameter_groups, weight_decay=config.weight_decay)
    steps = config.epochs * -(-len(examples) // config.batch_size)
    warmup = int(steps * config.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / max(warmup, 1), max(0.0, (steps - step) / max(steps - warmup, 1)))
    )
    generator = torch.Generator().manual_seed(config.seed)
    report = FitReport(metric=metric)
    best_state: dict[str, Any] | None = None
    average = WeightAverage(network, config.weight_average) if config.weight_average else None
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        network.train()
        order = torch.randperm(len(examples), generator=generator).tolist()
        total, count = 0.0, 0
        bar = tqdm(list(batches(order, config.batch_size)), desc=f"epoch {epoch}/{config.epochs}", disable=not progress)
        for batch in bar:
            value = loss([examples[i] for i in batch])
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            if average is not None:
                average.update()
            total += float(value.detach()) * len(batch)
            count += len(batch)
            bar.set_postfix(loss=f"{total / count:.4f}")
        with average.applied() if average is not None else nullcontext():
            score = float(validate())
            elapsed = time.perf_counter() - started
            report.history.append(EpochLog(epoch=epoch, loss=total / count, val_score=score, seconds=elapsed))
            # once on the terminal: beside the progress bars (tqdm.write keeps them whole), the log has it at debug
            logger.log(logging.DEBUG if progress else logging.INFO, "epoch %d: loss %.4f, val %.4f (%.0f s)", epoch,
                       total / count, score, elapsed)  # fmt: skip
            if progress:
                tqdm.write(f"epoch {epoch}: loss {total / count:.4f}  val {score:.4f}  ({elapsed:.0f} s)")
            if score > report.best_score:
                report.best_score, report.best_epoch, report.seconds_to_best = score, epoch, elapsed
                best_state = copy.deepcopy(network.state_dict())
                on_best(report)
        if epoch - report.best_epoch >= config.patience:
            logger.info("early stop after epoch %d: no better val score for %d epochs", epoch, config.patience)
            break
    if best_state is not None:
        network.load_state_dict(best_state)
    report.seconds = time.perf_counter() - started
    return report
