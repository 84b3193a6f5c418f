"""The default extractor: a pretrained encoder fine-tuned jointly for typed entity spans and relations.

Input: ``[CLS] post [SEP] image description [SEP] knowledge [SEP]`` (the template's segments).
Every span of up to ``max_span_width`` post words is classified into none or one of the 4 types from
its first and last subword vectors, a width embedding and, with ``context_mentions``, the mean vector of
the span's first mention in the context (image description, knowledge) with a mentioned/not flag: the
knowledge names about 90 % of gold entities and about 12 % of all spans, and describes them there
("X is a professional wrestler"), which the span reads directly instead of through attention
alone; with ``word_shapes`` (default) also the shapes of its edge words and their neighbours (case,
@handle, # hashtag, digits), which the uncased encoder cannot see; with ``mention_shapes`` how the context
writes the span (not, in lower case, with a capital, or opening a sentence: on val, of the spans whose first
word is capitalized, 37 % of those opening a sentence of the authors' knowledge are gold entities, 3 % of those
it writes in lower case), which it cannot see either. Every ordered pair of candidate
spans is classified into no relation or one of the 21 relations from both span vectors, their product,
[CLS], their distance and, with
``context_comentions`` (off by default: on val it did not beat ``context_mentions`` alone), the mean
vector of the first context sentence that mentions both (about half of the gold pairs have one, and it
often states the relation: "Bangkok is the capital of Thailand").
Training pairs are the gold entities plus the highest-scoring wrong spans (hard negatives); with
``knowledge_dropout`` a post is read in some batches without its knowledge, so that knowledge adds to
what the text tells rather than replacing it; with ``knowledge_free_weight`` prediction averages the
post's readings with and without its knowledge (:func:`knowledge_readings`). Decoding is :mod:`.decoding`'s.

This module ties the parts together: :mod:`.encoding` (posts -> examples), :mod:`.network` (imported
where a network is built, as it imports torch), :mod:`.decoding`, and the family's checkpoint files.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple, Self

from pydantic import BaseModel, Field

from ...default_models import default_model
from ...errors import Problem
from ...labels import ENTITY_TYPES, RELATIONS
from ...prompts import PromptTemplateFile
from ...records import NO_WORDS, Entity, Post, Quintuple, has_words
from ..base import PREDICT_BATCH_SIZE, Extractor, register_family
from ..checkpoint import CheckpointCard, CheckpointError
from ..hub import looks_like_hub_id
from ..inputs import InputAssembler, InputParts, InputTooLong
from ..precision import encoder_precision
from ..quantization import quantize_linear_int8
from ..training import Scorer, TrainConfig, batches
from ..windows import (
    Window,
    merge_pairs,
    one_reading_per_entity,
    plan_windows,
    unshared_pairs,
    window_entities,
    window_post,
)
from .config import SpanPairConfig, default_encoder_path
from .decoding import PairChoice, choose_pairs, entity_candidates, merge_schemas, select_quintuples
from .encoding import EncodedPost, InputEncoder, pair_rows

__all__ = [
    "THRESHOLD_GRID",
    "SpanPairExtractor",
    "ThresholdChoice",
    "decode_scored",
    "knowledge_readings",
    "score_posts",
]

THRESHOLD_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
"""The entity and relation thresholds :meth:`SpanPairExtractor.tune_thresholds` tries by default."""

# (post index, window or None, the unit's spans, their entity scores, its scored candidate pairs)
_ScoredUnit = tuple[int, Window | None, list[tuple[int, int]], list[float], list[tuple[PairChoice, int, int]]]
_ScoredPosts = list[_ScoredUnit]


class ThresholdChoice(BaseModel):
    """What :meth:`SpanPairExtractor.tune_thresholds` chose, and the score with and without it."""

    entity_threshold: float
    relation_threshold: float
    score: float = Field(description="the scorer's value on the tuning posts with the chosen thresholds")
    untuned_score: float = Field(description="with the thresholds the model had before")


logger = logging.getLogger("kecpm.extractor")

_WEIGHTS = "model.safetensors"
_TOKENIZER_FILE = "tokenizer.json"
# format 1 kept the encoder's config and the tokenizer in folders of their own
_ENCODER_DIR = "encoder"
_TOKENIZER_DIR = "tokenizer"


class _SpanReading(NamedTuple):
    """What one member's network read of a batch: its inputs, hidden states, span vectors and probabilities."""

    inputs: dict[str, Any]
    hidden: Any
    vectors: Any
    span_probs: Any


@register_family
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
        self.inputs: InputEncoder | None = None
        self.network: Any = None

    @property
    def tokenizer(self) -> Any:
        return self.inputs.tokenizer if self.inputs is not None else None

    # -- building -------------------------------------------------------------------------------
    def _build(self, tokenizer: Any, encoder: Any) -> None:
        from .network import SpanPairNetwork

        if not getattr(tokenizer, "is_fast", False):
            raise CheckpointError("the span-pair model needs a fast tokenizer (tokenizer.json)")
        self.network = SpanPairNetwork(encoder, self.config)
        use_types = getattr(encoder.config, "type_vocab_size", 0) >= 2
        self.inputs = InputEncoder(tokenizer, self.config, self.assembler, use_types)

    def _prepare(self, train: Sequence[Post]) -> None:
        if self.network is None:
            from transformers import AutoModel, AutoTokenizer

            path = self.config.encoder or default_encoder_path()
            tokenizer = AutoTokenizer.from_pretrained(path)
            self._build(tokenizer, AutoModel.from_pretrained(path))
        schema: dict[str, set[tuple[str, str]]] = {}
        for post in train:
            for q in post.quintuples:
                schema.setdefault(q.relation.value, set()).add((q.head.type.value, q.tail.type.value))
        self.schema = merge_schemas(self.schema, schema)

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

    # -- training -------------------------------------------------------------------------------
    def _examples(self, posts: Sequence[Post]) -> list[EncodedPost]:
        units = self._encode(posts, with_labels=True)
        if self.config.knowledge_dropout and self.assembler.parts.knowledge:
            # a post's windows depend on its text alone, so both readings have the same units; the
            # assembly counts logged are those of the posts as given, not of the bare second reading
            counted = self.assembler.stats.copy()
            bare = self._encode([p.model_copy(update={"knowledge": []}) for p in posts], with_labels=True)
            self.assembler.stats.clear()
            self.assembler.stats.update(counted)
            for (i, _, encoded), (_, _, without) in zip(units, bare, strict=True):
                if posts[i].knowledge:
                    encoded.without_knowledge = without
        self._log_stats()
        return [e for _, _, e in units]

    def _windows(self, post: Post) -> list[Window] | None:
        """The windows of a post whose text does not fit ``max_length``; None for one that does (read in
        one pass, as before windows existed). See :mod:`kecpm.extractor.windows`."""
        needed = self.inputs.text_cost(post)
        if needed <= self.config.max_length:
            return None
        costs = self.inputs.word_costs(post.tokens)
        overhead = needed - sum(costs)  # [CLS], [SEP] and the template's words around the text
        budget = self.config.window_length - overhead
        if budget <= 0:
            raise InputTooLong(
                Problem(
                    f"the template's words around the text need {overhead} tokens, leaving nothing of a "
                    f"{self.config.window_length}-token window; raise window_tokens or shorten the template",
                    record=post.id,
                )
            )
        windows = plan_windows(costs, budget=budget, overlap=self.config.window_overlap, record=post.id)
        self.assembler.stats["posts read in windows"] += 1
        self.assembler.stats["windows"] += len(windows)
        return windows

    def _encode(self, posts: Sequence[Post], *, with_labels: bool) -> list[tuple[int, Window | None, EncodedPost]]:
        """``(post index, window or None, example)``: one example per post that fits, one per window of a
        longer one (labelled with the gold entities inside the window, whatever their pairs)."""
        units: list[tuple[int, Window | None, EncodedPost]] = []
        for i, post in enumerate(posts):
            windows = self._windows(post)
            if windows is None:
                units.append((i, None, self.inputs.encode(post, with_labels=with_labels)))
                continue
            for window in windows:
                encoded = self.inputs.encode(window_post(post, window), with_labels=with_labels)
                if with_labels:
                    self._label_entities(encoded, window_entities(post, window))
                units.append((i, window, encoded))
            if with_labels and (split := unshared_pairs(post, windows)):
                self.assembler.stats["gold pairs in no one window (not learnt as pairs)"] += split
        return units

    def _log_stats(self) -> None:
        if self.assembler.stats:
            logger.info("input assembly: %s", dict(self.assembler.stats))
            self.assembler.stats.clear()

    def _loss(self, examples: Sequence[EncodedPost]) -> Any:
        """Span cross-entropy over every span, plus relation cross-entropy over the pairs of the gold
        entities and the highest-scoring wrong spans (hard negatives). With ``knowledge_dropout``, each
        post of the batch is read without its knowledge with that chance."""
        import torch
        import torch.nn.functional as F

        if self.config.knowledge_dropout:
            # torch's generator: seeded by fit, so a run repeats
            drawn = (torch.rand(len(examples)) < self.config.knowledge_dropout).tolist()
            examples = [
                e.without_knowledge if drop and e.without_knowledge is not None else e
                for e, drop in zip(examples, drawn, strict=True)
            ]
        t = self.inputs.batch(examples)
        gate = self.network.token_gate(t)
        hidden = self.network.encode(t["ids"], t["mask"], t["types"], gate)
        vectors = self.network.spans(hidden, t, gate)
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
        rows = pair_rows(examples, candidates_per_post)
        if rows:
            pair_logits = self.network.pairs(vectors, hidden, self.inputs.pairs(examples, rows, t["offsets"]))
            relation_weight = torch.ones(1 + len(RELATIONS))
            relation_weight[0] = self.config.relation_none_weight
            labels = torch.tensor([examples[b].pairs.get((h, tl), 0) for b, h, tl in rows])
            loss = loss + F.cross_entropy(pair_logits, labels, weight=relation_weight)
        return loss

    def _label_entities(self, encoded: EncodedPost, entities: Sequence[Entity]) -> None:
        """Label the spans of gold entities a window holds without their partner (their pair crosses
        windows): they are entities all the same, not negatives."""
        index = {span: k for k, span in enumerate(encoded.spans)}
        for entity in entities:
            k = index.get(entity.span) if entity.span is not None else None
            if k is not None and not encoded.span_labels[k]:
                encoded.span_labels[k] = 1 + ENTITY_TYPES.index(entity.type)

    # -- prediction -----------------------------------------------------------------------------
    def predict(
        self, posts: Sequence[Post], *, batch_size: int = PREDICT_BATCH_SIZE, progress: bool = False
    ) -> list[list[Quintuple]]:
        """The quintuples of each post, batched; a post longer than ``max_length`` is read in windows
        (:mod:`kecpm.extractor.windows`); a post without words (only URLs, emoji or punctuation) gets
        none, with a warning naming it.

        >>> model.predict([Post(id="p1", text="Alva Brenner signs with Oakline FC")])  # doctest: +SKIP
        """
        scored = self._score(posts, self.config, batch_size=batch_size, progress=progress)
        return decode_scored(posts, scored, self.config, rescreen=False)

    def tune_thresholds(
        self,
        posts: Sequence[Post],
        *,
        scorer: Scorer,
        entity_grid: Sequence[float] = THRESHOLD_GRID,
        relation_grid: Sequence[float] = THRESHOLD_GRID,
        batch_size: int = PREDICT_BATCH_SIZE,
    ) -> ThresholdChoice:
        """Choose the entity and relation thresholds that score best on ``posts`` (val), set them in
        ``self.config`` and say what was chosen. The network runs once, at the lowest entity threshold:
        a higher one keeps a prefix of the same candidates, so each grid point costs decoding only.
        A tie goes to the point nearest the thresholds the model had.

        >>> model.tune_thresholds(val, scorer=make_scorer(mode="paper"))  # doctest: +SKIP
        ThresholdChoice(entity_threshold=0.3, relation_threshold=0.4, score=0.41, untuned_score=0.39)
        """
        if not entity_grid or not relation_grid:
            raise ValueError("tune_thresholds needs at least one entity and one relation threshold")
        before = self.config
        lowest = before.model_copy(update={"entity_threshold": min(entity_grid)})
        scored = self._score(posts, lowest, batch_size=batch_size, progress=False)

        def score(entity: float, relation: float) -> float:
            config = before.model_copy(update={"entity_threshold": entity, "relation_threshold": relation})
            return scorer(posts, decode_scored(posts, scored, config, rescreen=True))

        grid = {(e, r): score(e, r) for e in entity_grid for r in relation_grid}
        untuned = grid.get((before.entity_threshold, before.relation_threshold))
        if untuned is None:
            untuned = score(before.entity_threshold, before.relation_threshold)
        entity, relation = max(
            grid,
            key=lambda k: (grid[k], -abs(k[0] - before.entity_threshold) - abs(k[1] - before.relation_threshold)),
        )
        self.config = before.model_copy(update={"entity_threshold": entity, "relation_threshold": relation})
        return ThresholdChoice(
            entity_threshold=entity, relation_threshold=relation, score=grid[entity, relation], untuned_score=untuned
        )

    def _after_training(self, val: Sequence[Post], scorer: Scorer, config: TrainConfig) -> dict[str, float]:
        if not config.tune_thresholds:
            return {}
        choice = self.tune_thresholds(val, scorer=scorer, batch_size=config.eval_batch_size)
        logger.info(
            "thresholds chosen on val: entity %.2f, relation %.2f (val %.4f, untuned %.4f)",
            choice.entity_threshold,
            choice.relation_threshold,
            choice.score,
            choice.untuned_score,
        )
        return {"entity_threshold": choice.entity_threshold, "relation_threshold": choice.relation_threshold}

    def _score(self, posts: Sequence[Post], config: SpanPairConfig, *, batch_size: int, progress: bool) -> _ScoredPosts:
        """The network's verdicts on every post (by window for a long one), with ``config``'s entity
        threshold choosing the candidate spans whose pairs are scored (and the model's own
        ``knowledge_free_weight`` whether it reads each post twice, :func:`knowledge_readings`)."""
        return score_posts([self], posts, config, self.schema, batch_size=batch_size, progress=progress)

    def without_knowledge(self) -> SpanPairExtractor:
        """This model reading posts without their knowledge (the image description kept), as
        ``knowledge_dropout`` trains it to: the same network, schema and decoding, other inputs.

        >>> model.without_knowledge().predict(val)  # doctest: +SKIP
        """
        if self.inputs is None:
            raise RuntimeError("the model is not trained: call fit() or load() first")
        view = copy.copy(self)
        parts = self.assembler.parts.model_copy(update={"knowledge": False})
        view.assembler = replace(self.assembler, parts=parts, stats=Counter())
        view.inputs = replace(self.inputs, assembler=view.assembler)  # shares the tokenizer and its caches
        return view

    def _read_spans(self, examples: Sequence[EncodedPost]) -> _SpanReading:
        """The encoder's hidden states, the span vectors and the span probabilities of a batch."""
        t = self.inputs.batch(examples)
        with encoder_precision(self.config.inference_precision):
            gate = self.network.token_gate(t)
            hidden = self.network.encode(t["ids"], t["mask"], t["types"], gate)
        hidden = hidden.float()  # the heads (small) and the prefix sums of range_mean stay in float32
        vectors = self.network.spans(hidden, t, gate)
        return _SpanReading(t, hidden, vectors, self.network.span_head(vectors).softmax(-1))

    def _pair_probs(
        self, reading: _SpanReading, examples: Sequence[EncodedPost], rows: Sequence[tuple[int, int, int]]
    ) -> Any:
        """The relation probabilities of the candidate pairs ``rows`` of a batch read by :meth:`_read_spans`."""
        pairs = self.inputs.pairs(examples, rows, reading.inputs["offsets"])
        return self.network.pairs(reading.vectors, reading.hidden, pairs).softmax(-1)

    def quantized(self) -> SpanPairExtractor:
        """An inference-only copy whose encoder's linear layers run in int8 (dynamic quantization).

        About 1.35x the batched throughput of the float32 model on an AVX-512 VNNI CPU, at a cost: on seed
        17's val, paper micro-F1 37.1 against 38.9 (README, ``benchmarks/extractor_perf.py --int8``); where
        the CPU has native bfloat16 (the default's ``inference_precision="auto"``) int8 is slower (x0.86). The
        copy cannot be trained or saved: train and save the float model, quantize after loading. Runs on
        :func:`kecpm.extractor.quantization.quantize_linear_int8` (torch.ao, deprecated by torch: see there).

        >>> fast = load_extractor("runs/model").quantized()  # doctest: +SKIP
        """
        if self.network is None:
            raise RuntimeError("the model is not trained: call fit() or load() first")
        clone = copy.copy(self)
        clone.config = self.config.model_copy(update={"inference_precision": "float32"})  # int8 is its own
        clone.network = copy.deepcopy(self.network)
        clone.network.encoder = quantize_linear_int8(clone.network.encoder)
        clone.network.eval()
        clone.inference_only = True
        clone.inputs = self.inputs.copy()
        return clone

    # -- saving ---------------------------------------------------------------------------------
    def _base_model(self) -> str | None:
        encoder = self.config.encoder
        if encoder is None:
            return default_model("minilm").model_id
        return encoder if looks_like_hub_id(encoder) else None

    def _save_files(self, directory: Path) -> dict[str, Any]:
        """The weights (``model.safetensors``) and the tokenizer's files at the root, as transformers
        lays a model out; the encoder's config goes into ``config.json`` (``encoder_config``), as a
        composite transformers config nests its parts' configs."""
        from safetensors.torch import save_file

        if self.network is None:
            raise RuntimeError("nothing to save: the model is not trained")
        state = {k: v.contiguous() for k, v in self.network.state_dict().items()}
        save_file(state, str(directory / _WEIGHTS), metadata={"format": "pt"})
        self.tokenizer.save_pretrained(str(directory))
        return {
            "config": self.config.model_dump(mode="json"),
            "schema": self.schema,
            "encoder_config": self.network.encoder.config.to_dict(),
            "files": [_WEIGHTS, _TOKENIZER_FILE],
        }

    @classmethod
    def _load_files(cls, directory: Path, card: CheckpointCard) -> Self:
        from safetensors.torch import load_file
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        # models saved before these options existed were trained and decoded without them
        legacy = {
            "context_mentions": False,
            "context_comentions": False,
            "word_shapes": False,
            "text_order_relations": (),
        }
        model = cls(
            SpanPairConfig(**{**legacy, **card.entry("config")}),
            parts=card.parts,
            template=card.prompt_template(),
        )
        model.schema = {r: [tuple(p) for p in pairs] for r, pairs in card.entry("schema").items()}
        # the weights come with the checkpoint: only the encoder's architecture is needed here
        if card.format_version == 1:
            tokenizer = AutoTokenizer.from_pretrained(str(directory / _TOKENIZER_DIR))
            encoder_config = AutoConfig.from_pretrained(str(directory / _ENCODER_DIR))
        else:
            tokenizer = AutoTokenizer.from_pretrained(str(directory))
            settings = dict(card.entry("encoder_config"))
            encoder_config = AutoConfig.for_model(settings.pop("model_type"), **settings)
        model._build(tokenizer, AutoModel.from_config(encoder_config))
        missing, unexpected = model.network.load_state_dict(load_file(str(directory / _WEIGHTS)), strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{directory}: weights do not match the model (missing {missing[:3]}...)")
        model.network.eval()
        return model


def knowledge_readings(model: SpanPairExtractor) -> list[tuple[SpanPairExtractor, float]]:
    """The readings ``model`` predicts from, with their weights: itself alone, or, with a
    ``knowledge_free_weight`` in its config and knowledge among its inputs, itself with ``1 - weight`` and
    :meth:`~SpanPairExtractor.without_knowledge` with ``weight`` (alone at 1)."""
    weight = model.config.knowledge_free_weight
    if not weight or not model.assembler.parts.knowledge:
        return [(model, 1.0)]
    if weight >= 1:
        return [(model.without_knowledge(), 1.0)]
    return [(model, 1 - weight), (model.without_knowledge(), weight)]


def _readings(
    members: Sequence[SpanPairExtractor], weights: Sequence[float] | None
) -> tuple[list[SpanPairExtractor], Sequence[float] | None]:
    """Every member's :func:`knowledge_readings` within its share. Weights stay None (an equal average,
    as before there were readings) while no member reads a post twice."""
    shares = weights if weights is not None else [1 / len(members)] * len(members)
    readings = [
        (reading, share * part)
        for member, share in zip(members, shares, strict=True)
        for reading, part in knowledge_readings(member)
    ]
    kept = [reading for reading, _ in readings]
    if weights is None and len(readings) == len(members):
        return kept, None
    return kept, [w for _, w in readings]


def score_posts(
    members: Sequence[SpanPairExtractor],
    posts: Sequence[Post],
    config: SpanPairConfig,
    schema: dict[str, list[tuple[str, str]]],
    *,
    batch_size: int,
    progress: bool,
    weights: Sequence[float] | None = None,
) -> _ScoredPosts:
    """The verdicts of one model, or of several averaged (an ensemble), on every post (by window for a
    long one). With several members, each reads the post through its own inputs; their span probabilities
    are averaged (by ``weights``, summing to 1; None: equally) before ``config``'s entity threshold picks
    the candidates, and their relation probabilities of those candidates are averaged before the pair
    choice. A member with a ``knowledge_free_weight`` reads each post with and without its knowledge, the
    two readings splitting its share (:func:`knowledge_readings`). Members must cut a post into the same
    spans and windows (the same encoder family and span settings), else a ``ValueError`` names the post."""
    import torch
    from tqdm.auto import tqdm

    for member in members:
        if member.network is None:
            raise RuntimeError("the model is not trained: call fit() or load() first")
    members, weights = _readings(members, weights)
    readable = [i for i, post in enumerate(posts) if has_words(post.tokens)]
    if len(readable) < len(posts):
        for post in (p for p in posts if not has_words(p.tokens)):
            logger.warning("record %r: %s", post.id, NO_WORDS)
    kept = [posts[i] for i in readable]
    units = []
    for member in members:
        units.append(member._encode(kept, with_labels=False))
        member._log_stats()
    first = units[0]
    for other in units[1:]:
        for (i, window, a), (j, other_window, b) in zip(first, other, strict=True):
            if (i, window, a.spans) != (j, other_window, b.spans):
                raise ValueError(
                    f"record {kept[i].id!r}: the ensemble's members read it into different spans or windows; "
                    "members need the same encoder tokenizer and span settings"
                )
    # Similar lengths share a batch, so little padding is computed.
    order = sorted(range(len(first)), key=lambda u: max(len(member_units[u][2].ids) for member_units in units))
    scored: list[_ScoredUnit] = [None] * len(first)  # type: ignore[list-item]
    modes = [member.network.training for member in members]
    for member in members:
        member.network.eval()
    try:
        with torch.inference_mode():
            for chunk in tqdm(list(batches(order, batch_size)), desc="predict", disable=not progress):
                examples = [[member_units[u][2] for u in chunk] for member_units in units]
                found = _score_batch(members, examples, config, schema, weights)
                for u, verdicts in zip(chunk, found, strict=True):
                    i, window, encoded = first[u]
                    scored[u] = (readable[i], window, encoded.spans, *verdicts)
    finally:
        for member, mode in zip(members, modes, strict=True):
            member.network.train(mode)
    return scored


def _score_batch(
    members: Sequence[SpanPairExtractor],
    examples: Sequence[Sequence[EncodedPost]],
    config: SpanPairConfig,
    schema: dict[str, list[tuple[str, str]]],
    weights: Sequence[float] | None,
) -> list[tuple[list[float], list[tuple[PairChoice, int, int]]]]:
    """Per example of a batch (``examples[m]``: member ``m``'s encoding of it), its spans' entity scores
    and its scored candidate pairs ``(choice, head span index, tail span index)``."""
    readings = [member._read_spans(batch) for member, batch in zip(members, examples, strict=True)]
    span_probs = _mean([r.span_probs for r in readings], weights)
    offsets = readings[0].inputs["offsets"]
    candidates_per_post, entity_scores = [], []
    for b, e in enumerate(examples[0]):
        probs = span_probs[offsets[b] : offsets[b] + len(e.spans)]
        entity_scores.append((1 - probs[:, 0]).tolist())
        candidates_per_post.append(entity_candidates(e.spans, entity_scores[-1], config))
    rows = pair_rows(examples[0], candidates_per_post)
    scored: list[list[tuple[PairChoice, int, int]]] = [[] for _ in examples[0]]
    if rows:
        relation_probs = _mean(
            [m._pair_probs(r, batch, rows) for m, r, batch in zip(members, readings, examples, strict=True)], weights
        )
        heads = [offsets[b] + h for b, h, _ in rows]
        tails = [offsets[b] + tl for b, _, tl in rows]
        choices = choose_pairs(
            relation_probs,
            span_probs[heads],
            span_probs[tails],
            schema=schema,
            type_constraints=config.type_constraints,
            one_type_per_entity=config.one_type_per_entity,
        )
        for (b, h, tl), choice in zip(rows, choices, strict=True):
            if choice is not None:
                scored[b].append((choice, h, tl))
    return list(zip(entity_scores, scored, strict=True))


def _mean(probabilities: Sequence[Any], weights: Sequence[float] | None) -> Any:
    # one member's probabilities pass through untouched, so a single model predicts exactly as before
    if len(probabilities) == 1:
        return probabilities[0]
    import torch

    stacked = torch.stack(list(probabilities))
    if weights is None:
        return stacked.mean(0)
    return torch.tensordot(torch.tensor(weights, dtype=stacked.dtype), stacked, dims=1)


def decode_scored(
    posts: Sequence[Post], scored: _ScoredPosts, config: SpanPairConfig, *, rescreen: bool
) -> list[list[Quintuple]]:
    """Quintuples from the network's verdicts under ``config``'s decoding; with ``rescreen``, the
    candidate spans are chosen again by ``config``'s entity threshold (at or above the one they were
    scored with), else the pairs scored are all candidates already."""
    results: list[list[Quintuple]] = [[] for _ in posts]
    windowed: dict[int, list[tuple[Window, list[tuple[int, int]], list[tuple[PairChoice, int, int]]]]] = {}
    for i, window, spans, entity_scores, pairs in scored:
        kept = pairs
        if rescreen:
            candidates = set(entity_candidates(spans, entity_scores, config))
            kept = [pair for pair in pairs if pair[1] in candidates and pair[2] in candidates]
        if window is None:
            results[i] = select_quintuples(posts[i], spans, kept, config)
        else:
            windowed.setdefault(i, []).append((window, spans, kept))
    for i, found in windowed.items():
        found.sort(key=lambda part: part[0].start)
        spans, merged = merge_pairs(found)
        quintuples = select_quintuples(posts[i], spans, merged, config)  # type: ignore[arg-type]
        results[i] = one_reading_per_entity(quintuples)
    return results
