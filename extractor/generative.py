"""The paper-faithful extractor: a seq2seq or causal language model that writes the quintuples.

Any Hugging Face checkpoint folder (t5-base, flan-t5-base, bart, a small decoder) is fine-tuned to
emit ``The relation between X (type) and Y (type) is "relation"; ...`` after reading the assembled
input (segments joined by newlines), and its output is parsed back; both with :mod:`kecpm.answers`, the
answer codec that retrieval and eval use too. Pieces that do not parse are counted in
:attr:`GenerativeExtractor.invalid` and logged, never raised.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field

from ..answers import ParsedAnswer, parse_answer, render_answer
from ..prompts import PromptTemplateFile
from ..records import Post, Quintuple
from .base import Extractor, register_family
from .checkpoint import CheckpointCard, CheckpointError
from .inputs import AssembledInput, InputAssembler, InputParts
from .training import TrainConfig, batches

__all__ = ["GenerativeConfig", "GenerativeExtractor", "answer_text"]

logger = logging.getLogger("kecpm.extractor")

_MODEL_DIR = "model"


class GenerativeConfig(BaseModel):
    """Which checkpoint, and the input and output limits (the paper: inputs up to 1,000 tokens)."""

    model_config = ConfigDict(frozen=True)

    model: str = Field(description="a local Hugging Face checkpoint folder (seq2seq or causal LM)")
    max_length: int = Field(default=1000, ge=8, description="input tokens")
    max_new_tokens: int = Field(default=160, ge=1)
    num_beams: int = Field(default=1, ge=1)
    separator: str = "\n"


@register_family
class GenerativeExtractor(Extractor):
    """Seq2seq or decoder-only extractor behind the common interface.

    >>> model = GenerativeExtractor(GenerativeConfig(model="/models/flan-t5-base"))  # doctest: +SKIP
    >>> model.fit(train, val, scorer=scorer, config=TrainConfig(batch_size=2, learning_rate=1e-4))  # doctest: +SKIP
    """

    family = "generative"

    def __init__(
        self,
        config: GenerativeConfig,
        *,
        parts: InputParts | None = None,
        template: PromptTemplateFile | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.assembler = InputAssembler(template=template, parts=parts or InputParts())
        self.train_config: TrainConfig | None = None
        self.model: Any = None
        self.tokenizer: Any = None
        self.invalid: Counter[str] = Counter()

    def _build(self, path: str | Path) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        if not Path(path).is_dir():
            raise CheckpointError(f"{path}: no such checkpoint folder (hub ids cannot be fetched offline)")
        self.is_seq2seq = bool(AutoConfig.from_pretrained(str(path)).is_encoder_decoder)
        loader = AutoModelForSeq2SeqLM if self.is_seq2seq else AutoModelForCausalLM
        self.model = loader.from_pretrained(str(path))
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        # Tokenizers without an end-of-sequence token (BERT's WordPiece) end a sequence with [SEP].
        self.eos_id = self.tokenizer.eos_token_id
        if self.eos_id is None:
            self.eos_id = self.tokenizer.sep_token_id
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_id

    def _prepare(self, train: Sequence[Post]) -> None:
        if self.model is None:
            self._build(self.config.model)

    def _network(self) -> Any:
        return self.model

    def _parameter_groups(self, config: TrainConfig) -> list[dict[str, Any]]:
        return [{"params": list(self.model.parameters()), "lr": config.learning_rate}]

    # -- inputs ---------------------------------------------------------------------------------
    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _cost(self, assembled: AssembledInput) -> int:
        return len(self.tokenizer(self._prompt(assembled))["input_ids"])

    def _cut(self, text: str, drop: int) -> str:
        if getattr(self.tokenizer, "is_fast", False):
            encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            keep = len(encoded["input_ids"]) - drop
            return text[: encoded["offset_mapping"][keep - 1][1]] if keep > 0 else ""
        words = text.split()
        return " ".join(words[: max(0, len(words) - drop)])

    def _prompt(self, assembled: AssembledInput) -> str:
        text = assembled.render(self.config.separator)
        return text if self.is_seq2seq else f"{text}{self.config.separator}"

    def _input_text(self, post: Post) -> str:
        assembled = self.assembler.fit(post, budget=self.config.max_length, cost=self._cost, cut=self._cut)
        return self._prompt(assembled)

    def _examples(self, posts: Sequence[Post]) -> list[tuple[list[int], list[int]]]:
        examples = []
        for post in posts:
            source = self.tokenizer(self._input_text(post))["input_ids"]
            target = [*self._ids(answer_text(post.quintuples)), self.eos_id]
            examples.append((source, target))
        if self.assembler.stats:
            logger.info("input assembly: %s", dict(self.assembler.stats))
            self.assembler.stats.clear()
        return examples

    def _loss(self, examples: Sequence[tuple[list[int], list[int]]]) -> Any:
        if self.is_seq2seq:
            ids, mask = _pad([s for s, _ in examples], self.pad_id, left=False)
            labels, _ = _pad([t for _, t in examples], -100, left=False)
            return self.model(input_ids=ids, attention_mask=mask, labels=labels).loss
        # Decoder-only: the loss is on the answer, not on the prompt.
        joined = [s + t for s, t in examples]
        ids, mask = _pad(joined, self.pad_id, left=False)
        labels = ids.clone()
        labels[mask == 0] = -100
        for row, (source, _) in enumerate(examples):
            labels[row, : len(source)] = -100
        return self.model(input_ids=ids, attention_mask=mask, labels=labels).loss

    # -- prediction -----------------------------------------------------------------------------
    def predict_parsed(
        self, posts: Sequence[Post], *, batch_size: int = 16, progress: bool = False
    ) -> list[ParsedAnswer]:
        """The parsed output of each post, with the pieces that did not parse."""
        import torch
        from tqdm.auto import tqdm

        if self.model is None:
            raise RuntimeError("the model is not trained: call fit() or load() first")
        sources = [self.tokenizer(self._input_text(p))["input_ids"] for p in posts]
        order = sorted(range(len(posts)), key=lambda i: len(sources[i]))
        outputs: list[ParsedAnswer] = [ParsedAnswer() for _ in posts]
        was_training = self.model.training
        self.model.eval()
        with torch.inference_mode():
            for chunk in tqdm(list(batches(order, batch_size)), desc="predict", disable=not progress):
                ids, mask = _pad([sources[i] for i in chunk], self.pad_id, left=not self.is_seq2seq)
                generated = self.model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=self.config.max_new_tokens,
                    num_beams=self.config.num_beams,
                    do_sample=False,
                    eos_token_id=self.eos_id,
                    pad_token_id=self.pad_id,
                )
                if not self.is_seq2seq:
                    generated = generated[:, ids.shape[1] :]
                for i, row in zip(chunk, generated.tolist(), strict=True):
                    text = self.tokenizer.decode(row, skip_special_tokens=True)
                    outputs[i] = parse_answer(text, tokens=posts[i].tokens)
        self.model.train(was_training)
        bad = [o for o in outputs if o.invalid]
        if bad:
            self.invalid["pieces"] += sum(len(o.invalid) for o in bad)
            self.invalid["posts"] += len(bad)
            logger.info(
                "%d of %d outputs had pieces that did not parse (%d pieces)",
                len(bad),
                len(posts),
                sum(len(o.invalid) for o in bad),
            )
        return outputs

    def predict(self, posts: Sequence[Post], *, batch_size: int = 16, progress: bool = False) -> list[list[Quintuple]]:
        """The quintuples of each post, in order (unparsable pieces are counted in :attr:`invalid`)."""
        return [o.quintuples for o in self.predict_parsed(posts, batch_size=batch_size, progress=progress)]

    # -- saving ---------------------------------------------------------------------------------
    def _save_files(self, directory: Path) -> dict[str, Any]:
        if self.model is None:
            raise RuntimeError("nothing to save: the model is not trained")
        self.model.save_pretrained(str(directory / _MODEL_DIR))
        self.tokenizer.save_pretrained(str(directory / _MODEL_DIR))
        return {"config": self.config.model_dump(mode="json"), "files": [f"{_MODEL_DIR}/config.json"]}

    @classmethod
    def _load_files(cls, directory: Path, card: CheckpointCard) -> Self:
        config = GenerativeConfig(**card.entry("config"))
        model = cls(config, parts=card.parts, template=card.prompt_template())
        model._build(directory / _MODEL_DIR)
        return model


def answer_text(quintuples: Sequence[Quintuple]) -> str:
    """The text the model learns to write: the answer sentences joined by ``"; "`` without periods, and
    nothing for a post without quintuples (:func:`kecpm.answers.parse_answer` reads it back)."""
    return render_answer(quintuples, separator="; ", period=False, empty="")


def _pad(rows: Sequence[list[int]], value: int, *, left: bool) -> tuple[Any, Any]:
    import torch

    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), value, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        if left:
            ids[i, length - len(row) :] = torch.tensor(row)
            mask[i, length - len(row) :] = 1
        else:
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
    return ids, mask
