"""Task-adaptive pretraining: an encoder's masked-language-model training continued on unlabelled
in-domain text (e.g. MNRE's tweets), before the extractor is fine-tuned on the few labelled posts.

The result is an encoder folder (``save_pretrained`` layout) that ``SpanPairConfig(encoder=DIR)`` and
``kecpm train --checkpoint DIR`` read like any other. Sentence-transformers checkpoints such as the
default all-MiniLM-L6-v2 ship without a masked-LM head, so a fresh head is first trained alone
(``head_steps``, the encoder frozen): otherwise the head's random gradients would reach the encoder
first. Only the encoder's weights are adapted and saved; its pooler (unused by kecpm's models) and its
tokenizer are kept as they were.

This changes the paper's protocol (the few labelled posts only): report its scores as a row of their
own, and never adapt on text that is scored (val, test).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .span_pair.config import default_encoder_path

__all__ = ["ADAPTATION_FILE", "AdaptConfig", "AdaptReport", "adapt_encoder"]

ADAPTATION_FILE = "adaptation.json"
"""Written beside the adapted encoder's weights: the :class:`AdaptReport`."""

logger = logging.getLogger("kecpm.extractor")


class AdaptConfig(BaseModel):
    """How the encoder is adapted."""

    model_config = ConfigDict(frozen=True)

    epochs: int = Field(default=3, ge=1)
    batch_size: int = Field(default=32, ge=1)
    learning_rate: float = Field(default=1e-4, gt=0, description="of the encoder, after the head's steps")
    head_learning_rate: float = Field(default=1e-3, gt=0, description="of the new masked-LM head")
    head_steps: int = Field(
        default=100, ge=0, description="first steps that train only the masked-LM head (the encoder frozen)"
    )
    warmup_ratio: float = Field(default=0.06, ge=0, le=1)
    weight_decay: float = 0.01
    mask_probability: float = Field(default=0.15, gt=0, lt=1)
    max_length: int = Field(default=128, ge=8, description="tokens per text; longer ones are cut")
    seed: int = 17
    threads: int | None = Field(default=None, description="torch threads; None leaves torch's setting")


class AdaptReport(BaseModel):
    """What :func:`adapt_encoder` did."""

    base_encoder: str
    texts: int
    steps: int
    epoch_losses: list[float] = Field(description="mean masked-LM loss per epoch (the head's steps included)")
    seconds: float
    config: AdaptConfig


def adapt_encoder(
    texts: Sequence[Sequence[str]],
    out: str | Path,
    *,
    encoder: str | None = None,
    config: AdaptConfig | None = None,
    progress: bool = False,
) -> AdaptReport:
    """Continue ``encoder``'s (default: all-MiniLM-L6-v2) masked-LM training on ``texts`` (word lists)
    and save the adapted encoder and its tokenizer to ``out``, with ``adaptation.json``.

    >>> adapt_encoder(read_texts("mnre_train.txt"), "runs/minilm-mnre")  # doctest: +SKIP
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling

    config = config or AdaptConfig()
    texts = [list(words) for words in texts if words]
    if not texts:
        raise ValueError("adapt_encoder needs at least one non-empty text")
    base = encoder or default_encoder_path()
    out = Path(out)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForMaskedLM.from_pretrained(base)
    encoded = [
        tokenizer(words, is_split_into_words=True, truncation=True, max_length=config.max_length)["input_ids"]
        for words in texts
    ]
    collate = DataCollatorForLanguageModeling(tokenizer, mlm_probability=config.mask_probability)
    body = model.base_model
    head = [p for name, p in model.named_parameters() if not name.startswith(model.base_model_prefix + ".")]
    optimizer = torch.optim.AdamW(
        [
            {"params": list(body.parameters()), "lr": config.learning_rate},
            {"params": head, "lr": config.head_learning_rate},
        ],
        weight_decay=config.weight_decay,
    )
    per_epoch = math.ceil(len(encoded) / config.batch_size)
    total = per_epoch * config.epochs
    schedule = _schedule(optimizer, total, config)
    started = time.perf_counter()
    losses: list[float] = []
    step = 0
    model.train()
    for epoch in range(config.epochs):
        order = torch.randperm(len(encoded)).tolist()
        epoch_loss = 0.0
        for start in tqdm(range(0, len(order), config.batch_size), desc=f"adapt {epoch + 1}", disable=not progress):
            batch = collate([{"input_ids": encoded[k]} for k in order[start : start + config.batch_size]])
            body.requires_grad_(step >= config.head_steps)
            loss = _masked_loss(model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            epoch_loss += loss.item()
            step += 1
        losses.append(epoch_loss / per_epoch)
        logger.info("adaptation epoch %d: masked-LM loss %.4f", epoch + 1, losses[-1])
    _save_encoder(AutoModel.from_pretrained(base), body, out)
    tokenizer.save_pretrained(str(out))
    report = AdaptReport(
        base_encoder=base,
        texts=len(texts),
        steps=step,
        epoch_losses=losses,
        seconds=time.perf_counter() - started,
        config=config,
    )
    (out / ADAPTATION_FILE).write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return report


def _masked_loss(model: Any, batch: dict[str, Any]) -> Any:
    """The masked-LM loss with the vocabulary head run on the masked tokens only (about 15 %): run over
    every token it would cost more than the encoder."""
    import torch.nn.functional as F

    labels = batch.pop("labels")
    hidden = model.base_model(**batch).last_hidden_state
    masked = labels != -100
    return F.cross_entropy(_lm_head(model)(hidden[masked]), labels[masked])


def _lm_head(model: Any) -> Any:
    """The masked-LM model's head (BERT's ``cls``, RoBERTa's ``lm_head``): its one part beside the encoder."""
    heads = [module for name, module in model.named_children() if name != model.base_model_prefix]
    if len(heads) != 1:
        raise TypeError(f"{type(model).__name__}: expected one head beside the encoder, found {len(heads)}")
    return heads[0]


def _schedule(optimizer: Any, total: int, config: AdaptConfig) -> Any:
    """The head's steps at its rate, then for all weights a linear warm-up and decay over the rest."""
    import torch

    rest = max(1, total - config.head_steps)
    warmup = max(1, int(rest * config.warmup_ratio))

    def factor(step: int) -> float:
        if step < config.head_steps:
            return 1.0
        k = step - config.head_steps
        return min((k + 1) / warmup, max(0.0, (rest - k) / max(1, rest - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _save_encoder(original: Any, adapted: Any, out: Path) -> None:
    """The original encoder (pooler and config as they were) with the adapted weights, saved to ``out``."""
    missing, unexpected = original.load_state_dict(adapted.state_dict(), strict=False)
    if unexpected or any(not key.startswith("pooler.") for key in missing):
        raise RuntimeError(
            f"the adapted weights do not fit the encoder (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    out.mkdir(parents=True, exist_ok=True)
    original.save_pretrained(str(out))
