from __future__ import annotations

import json

import pytest
import torch

from kecpm.extractor import SpanPairConfig
from kecpm.extractor.span_pair.decoding import choose_pairs, entity_candidates, select_quintuples
from kecpm.extractor.span_pair.encoding import EncodedPost
from kecpm.labels import ENTITY_TYPES, RELATIONS
from kecpm.records import Post


def test_candidates_are_the_best_spans_without_overlap():
    spans = [(0, 1), (0, 2), (2, 3), (3, 4), (4, 5)]
    config = SpanPairConfig()
    assert entity_candidates(spans, [0.9, 0.95, 0.8, 0.1, 0.05], config) == [1, 2]  # (0, 1) overlaps (0, 2)
    # under the threshold, still two: a post needs a pair
    assert entity_candidates(spans, [0.1, 0.05, 0.2, 0.01, 0.3], config) == [4, 2]
    assert entity_candidates(spans, [0.9] * 5, config.model_copy(update={"max_entities": 1})) == [0]


def _probabilities(relation: str, head: str, tail: str, *, sure: float = 0.9):
    relation_probs = torch.full((1, 1 + len(RELATIONS)), (1 - sure) / len(RELATIONS))
    relation_probs[0, 1 + [r.value for r in RELATIONS].index(relation)] += sure

    def types(name: str):
        probs = torch.full((1, 1 + len(ENTITY_TYPES)), 0.1)
        probs[0, 1 + [t.value for t in ENTITY_TYPES].index(name)] = 0.6
        return probs

    return relation_probs, types(head), types(tail)


def test_relation_and_types_are_chosen_jointly_within_the_schema():
    # the span types say per -> per, but member_of had only per -> org in training
    probs = _probabilities("member_of", "per", "per")
    ((probability, relation, head, tail),) = choose_pairs(*probs, schema={"member_of": [("per", "org")]},
                                                          type_constraints=True)  # fmt: skip
    assert (relation.value, head.value, tail.value) == ("member_of", "per", "org")
    assert probability == pytest.approx(1 - probs[0][0, 0].item())
    ((_, relation, head, tail),) = choose_pairs(*probs, schema={}, type_constraints=False)
    assert (relation.value, head.value, tail.value) == ("member_of", "per", "per")
    assert choose_pairs(*probs, schema={}, type_constraints=True) == [None]  # no relation was seen in training


def test_selection_keeps_one_direction_and_at_least_one_pair():
    post = Post(id="s1", text="Ann Lee joins Oakline FC")
    encoded = EncodedPost([], [], [], [], [(0, 2), (3, 5)], [], [], [], [], [], [], {})
    choice = choose_pairs(*_probabilities("member_of", "per", "org"), schema={}, type_constraints=False)[0]
    reverse = (0.6, *choice[1:])
    config = SpanPairConfig()
    (quintuple,) = select_quintuples(post, encoded.spans, [(reverse, 1, 0), (choice, 0, 1)], config)
    assert quintuple.surface() == ("Ann Lee", "per", "Oakline FC", "org", "member_of")
    weak = (0.2, *choice[1:])
    assert len(select_quintuples(post, encoded.spans, [(weak, 0, 1)], config)) == 1  # the best pair in any case
    assert (
        select_quintuples(post, encoded.spans, [(weak, 0, 1)], config.model_copy(update={"at_least_one": False})) == []
    )


def _pair(relations: dict[str, float], head: dict[str, float], tail: dict[str, float]):
    """One pair's relation, head-type and tail-type probabilities (index 0: none)."""

    def probs(names, given):
        row = torch.zeros(1, 1 + len(names))
        for name, p in given.items():
            row[0, 1 + [n.value for n in names].index(name)] = p
        row[0, 0] = 1 - row.sum()
        return row

    return probs(RELATIONS, relations), probs(ENTITY_TYPES, head), probs(ENTITY_TYPES, tail)


def test_one_type_per_entity_keeps_the_span_s_own_type():
    # "Met Gala" is rather misc than loc, but contain (loc -> loc) is the likelier relation:
    # jointly, Met Gala becomes loc in this pair; with one type per entity it stays misc (held_on).
    probs = _pair({"contain": 0.6, "held_on": 0.3}, {"misc": 0.45, "loc": 0.4}, {"loc": 0.9})
    schema = {"held_on": [("misc", "loc")], "contain": [("loc", "loc")]}
    ((_, relation, head, _),) = choose_pairs(*probs, schema=schema, type_constraints=True)
    assert (relation.value, head.value) == ("contain", "loc")
    ((probability, relation, head, tail),) = choose_pairs(
        *probs, schema=schema, type_constraints=True, one_type_per_entity=True
    )
    assert (relation.value, head.value, tail.value) == ("held_on", "misc", "loc")
    assert probability == pytest.approx(0.9)  # the pair's probability of some relation is unchanged
    # no relation had misc -> loc in training: the joint choice stands
    ((_, relation, head, _),) = choose_pairs(
        *probs, schema={"contain": [("loc", "loc")]}, type_constraints=True, one_type_per_entity=True
    )
    assert (relation.value, head.value) == ("contain", "loc")


def test_text_order_relations_put_the_earlier_entity_first():
    post = Post(id="s2", text="Ann Lee and Bo Chen on stage")
    encoded = EncodedPost([], [], [], [], [(0, 2), (3, 5)], [], [], [], [], [], [], {})
    peer = choose_pairs(*_probabilities("peer", "per", "per"), schema={}, type_constraints=False)[0]
    member = choose_pairs(*_probabilities("member_of", "per", "org"), schema={}, type_constraints=False)[0]
    config = SpanPairConfig(text_order_relations=("peer",))
    (quintuple,) = select_quintuples(post, encoded.spans, [(peer, 1, 0)], config)
    assert (quintuple.head.name, quintuple.tail.name) == ("Ann Lee", "Bo Chen")
    (quintuple,) = select_quintuples(post, encoded.spans, [(peer, 1, 0)], SpanPairConfig(text_order_relations=()))
    assert (quintuple.head.name, quintuple.tail.name) == ("Bo Chen", "Ann Lee")
    # a relation not listed keeps the direction the model chose, types with their entities
    (quintuple,) = select_quintuples(post, encoded.spans, [(member, 1, 0)], config)
    assert quintuple.surface() == ("Bo Chen", "per", "Ann Lee", "org", "member_of")


def test_decoding_options_survive_the_checkpoint_card_s_json():
    config = SpanPairConfig(one_type_per_entity=True, text_order_relations=("peer", "couple"))
    assert SpanPairConfig(**json.loads(json.dumps(config.model_dump(mode="json")))) == config
    with pytest.raises(ValueError):
        SpanPairConfig(text_order_relations=("friends",))
