"""From the span-pair network's probabilities to quintuples.

Spans over the entity threshold (greedily without overlap) are candidates; a pair is kept when its
relation probability passes the threshold, one direction per pair of entities, and the relation and
both types are chosen jointly among the type pairs that relation had in training (e.g. ``member_of``
is per -> org), or with ``one_type_per_entity`` the relation alone for each entity's most likely type.
A post gets at least its best pair (every JMERE post has one). Relations in ``text_order_relations``
(the symmetric ones) are written with the earlier entity as head, as the data writes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ...labels import ENTITY_TYPES, RELATIONS, EntityType, Relation
from ...records import Entity, Post, Quintuple
from .config import SpanPairConfig
from .encoding import overlap

__all__ = ["PairChoice", "RelationSchema", "choose_pairs", "entity_candidates", "merge_schemas", "select_quintuples"]

RelationSchema = Mapping[str, Sequence[tuple[str, str]]]
"""Per relation name, the (head type, tail type) pairs it had in training."""

PairChoice = tuple[float, Relation, EntityType, EntityType]
"""A pair's relation probability and its best (relation, head type, tail type)."""


def merge_schemas(*schemas: RelationSchema) -> dict[str, list[tuple[str, str]]]:
    """Every (head type, tail type) pair each relation has in any of ``schemas``, sorted by relation and
    pair: a set's order changes with the process's hash seed, a saved card's must not."""
    merged: dict[str, set[tuple[str, str]]] = {}
    for schema in schemas:
        for relation, pairs in schema.items():
            merged.setdefault(relation, set()).update((a, b) for a, b in pairs)
    return {r: sorted(merged[r]) for r in sorted(merged)}


def entity_candidates(spans: Sequence[tuple[int, int]], scores: Sequence[float], config: SpanPairConfig) -> list[int]:
    """The indices of the spans taken as entities: by score, without overlap, at most ``max_entities``,
    and at least two (a pair) even under the threshold."""
    ranked = sorted(range(len(spans)), key=lambda k: -scores[k])
    chosen: list[int] = []
    for k in ranked:
        if len(chosen) >= config.max_entities:
            break
        if scores[k] < config.entity_threshold and len(chosen) >= 2:
            break
        if all(not overlap(spans[k], spans[c]) for c in chosen):
            chosen.append(k)
    return chosen


def choose_pairs(
    relation_probs: Any,
    head_probs: Any,
    tail_probs: Any,
    *,
    schema: RelationSchema,
    type_constraints: bool,
    one_type_per_entity: bool = False,
) -> list[PairChoice | None]:
    """Per pair, the best (relation, head type, tail type) and the pair's relation probability.

    The joint score is P(relation) x P(head type | entity) x P(tail type | entity), over the type
    pairs each relation had in training (or the most likely types, without type constraints). With
    ``one_type_per_entity``, each entity keeps its most likely type and only the relation is chosen
    (among those its two types had), so an entity is not ``misc`` in one pair and ``loc`` in another;
    a pair whose types no relation had keeps the joint choice.
    """
    import torch
    import torch.nn.functional as F

    relations = relation_probs[:, 1:]
    head_types = head_probs[:, 1:] / head_probs[:, 1:].sum(-1, keepdim=True)
    tail_types = tail_probs[:, 1:] / tail_probs[:, 1:].sum(-1, keepdim=True)
    n_types = len(ENTITY_TYPES)
    if type_constraints:
        allowed = torch.zeros(len(RELATIONS), n_types, n_types)
        for r, relation in enumerate(RELATIONS):
            for a, b in schema.get(relation.value, []):
                allowed[r, ENTITY_TYPES.index(EntityType(a)), ENTITY_TYPES.index(EntityType(b))] = 1
        if not allowed.any():
            return [None] * len(relations)
        joint = relations[:, :, None, None] * head_types[:, None, :, None] * tail_types[:, None, None, :]
        # -1 keeps a disallowed combination below any allowed one, even one of probability 0
        best = torch.where(allowed.bool(), joint, torch.tensor(-1.0)).flatten(1).argmax(-1)
        if one_type_per_entity:
            fixed = F.one_hot(head_types.argmax(-1), n_types)[:, None, :, None].bool()
            fixed = fixed & F.one_hot(tail_types.argmax(-1), n_types)[:, None, None, :].bool() & allowed.bool()
            best_fixed = torch.where(fixed, joint, torch.tensor(-1.0)).flatten(1).argmax(-1)
            best = torch.where(fixed.flatten(1).any(-1), best_fixed, best)
        r_best, a_best, b_best = best // (n_types * n_types), best // n_types % n_types, best % n_types
    else:
        r_best, a_best, b_best = relations.argmax(-1), head_types.argmax(-1), tail_types.argmax(-1)
    keep = (1 - relation_probs[:, 0]).tolist()
    return [
        (keep[i], RELATIONS[r], ENTITY_TYPES[a], ENTITY_TYPES[b])
        for i, (r, a, b) in enumerate(zip(r_best.tolist(), a_best.tolist(), b_best.tolist(), strict=True))
    ]


def select_quintuples(
    post: Post, spans: Sequence[tuple[int, int]], scored: list[tuple[PairChoice, int, int]], config: SpanPairConfig
) -> list[Quintuple]:
    """A post's quintuples from its scored pairs ``(choice, head, tail)``, indices into ``spans`` (the
    post's token spans): the most probable
    first, one direction per pair of entities, those over the relation threshold (and, with
    ``at_least_one``, the best one in any case); a relation of ``text_order_relations`` gets the entity
    that comes first in the post as its head."""
    scored.sort(key=lambda s: -s[0][0])
    kept, seen = [], set()
    for (probability, relation, head_type, tail_type), h, tl in scored:
        key = frozenset((h, tl))
        if key in seen:  # one direction per pair of entities
            continue
        if probability >= config.relation_threshold or (config.at_least_one and not kept):
            seen.add(key)
            if relation in config.text_order_relations and spans[tl][0] < spans[h][0]:
                h, tl, head_type, tail_type = tl, h, tail_type, head_type
            kept.append((h, tl, relation, head_type, tail_type))
    return [
        Quintuple(
            head=_entity(post, spans[h], head_type),
            tail=_entity(post, spans[tl], tail_type),
            relation=relation,
        )
        for h, tl, relation, head_type, tail_type in kept
    ]


def _entity(post: Post, span: tuple[int, int], type_: EntityType) -> Entity:
    return Entity(name=" ".join(post.tokens[span[0] : span[1]]), type=type_, span=span)
