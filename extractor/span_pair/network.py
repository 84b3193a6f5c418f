"""The span-pair network: a pretrained encoder with a span classifier and a pair classifier on top.

It imports torch at its top, so kecpm imports it only where a network is built.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...labels import ENTITY_TYPES, RELATIONS
from .config import SpanPairConfig
from .encoding import DISTANCE_BUCKETS, MENTION_SHAPES, SHAPES, additive_mask

__all__ = ["SpanPairNetwork"]


class SpanPairNetwork(nn.Module):
    """Span vectors (first and last subword, width, optionally the span's first context mention, scaled
    by a learned gate per knowledge sentence, the shapes of its edge words and neighbours and how the
    context writes it) are
    classified into none or a type; pairs of projected span vectors (with their product, [CLS], their
    distance, optionally the first context sentence naming both) into no relation or a relation.

    The layers are created in a fixed order, so a seed gives the same initial weights, and their names
    are the keys of the saved weights.
    """

    def __init__(self, encoder: Any, config: SpanPairConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder
        size = encoder.config.hidden_size
        span_size = 2 * size + config.width_embedding
        if config.context_mentions:
            span_size += size + config.width_embedding
            self.mentioned = nn.Embedding(2, config.width_embedding)
        if config.word_shapes:
            span_size += 4 * config.width_embedding
        if config.mention_shapes:
            span_size += config.width_embedding
        self.width = nn.Embedding(config.max_span_width + 1, config.width_embedding)
        self.span_head = nn.Sequential(
            nn.Linear(span_size, config.hidden_size),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden_size, 1 + len(ENTITY_TYPES)),
        )
        self.pair_project = nn.Sequential(nn.Linear(span_size, config.hidden_size), nn.GELU())
        # Where the tail stands from the head (before/after, how far): direction needs it.
        self.distance = nn.Embedding(2 * len(DISTANCE_BUCKETS), config.width_embedding)
        pair_size = 3 * config.hidden_size + size + config.width_embedding
        if config.context_comentions:
            pair_size += size + config.width_embedding
            self.comentioned = nn.Embedding(2, config.width_embedding)
        self.pair_head = nn.Sequential(
            nn.Dropout(config.dropout),
            nn.Linear(pair_size, config.hidden_size),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden_size, 1 + len(RELATIONS)),
        )
        # Created last, so the other layers start from the same weights with and without it.
        if config.word_shapes:
            self.shape = nn.Embedding(len(SHAPES), config.width_embedding)
        if config.mention_shapes:
            self.mention_shape = nn.Embedding(len(MENTION_SHAPES), config.width_embedding)
        if config.knowledge_gate:
            self.gate = nn.Linear(size, 1)
            # starts open (sigmoid(4) = 0.98) and the same for every sentence: the model first reads the
            # knowledge as without the gate, and learns which sentences to turn down
            nn.init.zeros_(self.gate.weight)
            nn.init.constant_(self.gate.bias, 4.0)

    def token_gate(self, t: dict[str, Any]) -> Any:
        """With ``knowledge_gate``, the log of each token's gate in the batch ``t`` (``(batch, length)``, 0 outside
        the knowledge sentences); else None. From the word embeddings alone, so the encoder runs once."""
        if not self.config.knowledge_gate:
            return None
        ids, (batch, start, end) = t["ids"], t["gated"].unbind(-1)
        words = self.encoder.get_input_embeddings()(ids).float()
        log_gate = nn.functional.logsigmoid(self.gate(range_mean(words, batch, start, end)).float()).squeeze(-1)
        # each sentence's value added over its tokens: +at its start, -at its end, summed along the input
        steps = words.new_zeros(ids.shape[0], ids.shape[1] + 1)
        steps = steps.index_put((batch, start), log_gate, accumulate=True).index_put(
            (batch, end), -log_gate, accumulate=True
        )
        return steps.cumsum(1)[:, :-1]

    def encode(self, ids: Any, mask: Any, type_ids: Any, gate: Any = None) -> Any:
        """The encoder's last hidden states of a padded batch; ``gate`` (:meth:`token_gate`) is added to the
        attention logits of every query to each key, so a gated sentence gets that share of attention."""
        if gate is not None:
            if mask.dim() == 2:
                mask = additive_mask(mask.bool()[:, None, None, :])
            mask = mask + gate[:, None, None, :]
        kwargs = {"input_ids": ids, "attention_mask": mask}
        if type_ids is not None:
            kwargs["token_type_ids"] = type_ids
        return self.encoder(**kwargs).last_hidden_state

    def spans(self, hidden: Any, t: dict[str, Any], gate: Any = None) -> Any:
        """The vector of every span of the batch (``t``: the span inputs of :meth:`InputEncoder.batch`;
        ``gate``: :meth:`token_gate`, which scales a context mention by its sentence's gate)."""
        batch = t["batch"]
        parts = [hidden[batch, t["first"]], hidden[batch, t["last"]], self.width(t["width"])]
        if self.config.context_mentions:
            start, end = t["mention_start"], t["mention_end"]
            mention = range_mean(hidden, batch, start, end)
            if gate is not None:
                mention = mention * range_mean(gate.exp().unsqueeze(-1), batch, start, end)
            parts += [mention, self.mentioned((end > start).long())]
        if self.config.word_shapes:
            parts.append(self.shape(t["shapes"]).flatten(1))
        if self.config.mention_shapes:
            parts.append(self.mention_shape(t["mention_shapes"]))
        return torch.cat(parts, dim=-1)

    def pairs(self, span_vectors: Any, hidden: Any, p: dict[str, Any]) -> Any:
        """The relation logits of the pairs ``p`` (rows of head and tail span indices in the batch)."""
        # only the spans in a pair are projected (at prediction a few candidates per post of ~100 spans)
        rows, where = torch.unique(torch.cat([p["heads"], p["tails"]]), return_inverse=True)
        projected = self.pair_project(span_vectors[rows])
        h, t = projected[where[: len(p["heads"])]], projected[where[len(p["heads"]) :]]
        parts = [h, t, h * t, hidden[p["batch"], 0], self.distance(p["distance"])]
        if self.config.context_comentions:
            start, end = p["sentence_start"], p["sentence_end"]
            parts += [range_mean(hidden, p["batch"], start, end), self.comentioned((end > start).long())]
        return self.pair_head(torch.cat(parts, dim=-1))


def range_mean(hidden: Any, batch: Any, start: Any, end: Any) -> Any:
    """Per row, the mean hidden vector over tokens ``start:end`` of post ``batch`` (zero when empty),
    from prefix sums: one gather for all rows."""
    sums = torch.nn.functional.pad(hidden.cumsum(1), (0, 0, 1, 0))
    return (sums[batch, end] - sums[batch, start]) / (end - start).clamp(min=1).unsqueeze(-1)
