"""Window planning, sub-posts and merging, without a model."""

from __future__ import annotations

import itertools
import random

import pytest

from kecpm.extractor import InputTooLong
from kecpm.extractor.windows import (
    Window,
    merge_pairs,
    one_reading_per_entity,
    plan_windows,
    unshared_pairs,
    window_entities,
    window_post,
)
from kecpm.records import Entity, Post, Quintuple


@pytest.mark.parametrize("seed", range(30))
def test_windows_cover_every_word_within_budget_and_hold_every_short_span(seed: int) -> None:
    rng = random.Random(seed)
    costs = [rng.choice([1, 1, 1, 2, 3, 5]) for _ in range(rng.randint(1, 300))]
    overlap = rng.randint(0, 10)
    budget = rng.randint(5, 40) if seed % 2 else rng.randint(10 * overlap, 10 * overlap + 40)
    windows = plan_windows(costs, budget=budget, overlap=overlap, record="p")
    assert windows[0].start == 0 and windows[-1].end == len(costs)
    for before, after in itertools.pairwise(windows):
        assert before.start < after.start <= before.end < after.end  # moves on, leaves no gap
        assert before.end - after.start <= overlap
    assert all(sum(costs[w.start : w.end]) <= budget for w in windows)
    # when any 2 x overlap words fit a window, every span of up to overlap + 1 words lies inside one
    if all(sum(costs[i : i + 2 * overlap]) <= budget for i in range(len(costs))):
        for start in range(len(costs)):
            for end in range(start + 1, min(len(costs), start + overlap + 1) + 1):
                assert any(w.start <= start and end <= w.end for w in windows), (start, end)


def test_the_stride_is_the_window_minus_the_overlap() -> None:
    windows = plan_windows([1] * 100, budget=40, overlap=16, record="p")
    assert [(w.start, w.end) for w in windows] == [(0, 40), (24, 64), (48, 88), (72, 100)]
    assert plan_windows([1] * 5, budget=40, overlap=16, record="p") == [Window(0, 5)]


def test_a_word_longer_than_a_window_is_an_error_naming_the_record() -> None:
    with pytest.raises(InputTooLong, match=r"record 'p7'.*word 3 alone needs 50 tokens, over the 20 of a window"):
        plan_windows([1, 1, 50, 1], budget=20, overlap=2, record="p7")


def _entity(tokens: list[str], start: int, end: int, type_: str) -> Entity:
    return Entity(name=" ".join(tokens[start:end]), type=type_, span=(start, end))


def _long_post() -> Post:
    tokens = (
        "Mira Holt signs with Oakline FC and then a long day passes quietly before Jonas Vale moved to Eastholm".split()
    )
    mira, oakline = _entity(tokens, 0, 2, "per"), _entity(tokens, 4, 6, "org")
    jonas, eastholm = _entity(tokens, 14, 16, "per"), _entity(tokens, 18, 19, "loc")
    return Post(
        id="long",
        tokens=tokens,
        knowledge=["Mira Holt is a footballer."],
        image_descriptions=["a stadium"],
        quintuples=[
            Quintuple(head=mira, tail=oakline, relation="member_of"),
            Quintuple(head=jonas, tail=eastholm, relation="place_of_residence"),
            Quintuple(head=mira, tail=jonas, relation="peer"),  # shares no window below
        ],
    )


def test_a_window_post_keeps_its_pairs_and_context_and_moves_the_spans() -> None:
    post = _long_post()
    last = window_post(post, Window(10, 19))
    assert last.tokens == post.tokens[10:19] and last.text == " ".join(post.tokens[10:19])
    assert last.knowledge == post.knowledge and last.image_descriptions == post.image_descriptions
    (q,) = last.quintuples
    assert (q.head.name, q.head.span, q.tail.name, q.tail.span) == ("Jonas Vale", (4, 6), "Eastholm", (8, 9))
    assert [e.name for e in window_entities(post, Window(0, 8))] == ["Mira Holt", "Oakline FC"]
    assert [e.span for e in window_entities(post, Window(10, 19))] == [(4, 6), (8, 9)]
    assert unshared_pairs(post, [Window(0, 8), Window(6, 19)]) == 1
    assert unshared_pairs(post, [Window(0, 19)]) == 0


def test_merged_pairs_take_the_best_window_and_post_coordinates() -> None:
    first = (Window(0, 10), [(0, 2), (4, 6)], [((0.6, "a"), 0, 1)])
    second = (Window(4, 14), [(0, 2), (6, 8)], [((0.9, "b"), 0, 1), ((0.7, "c"), 1, 0)])
    spans, scored = merge_pairs([first, second])
    assert spans == [(0, 2), (4, 6), (10, 12)]
    assert sorted((choice, spans[h], spans[t]) for choice, h, t in scored) == [
        ((0.6, "a"), (0, 2), (4, 6)),
        ((0.7, "c"), (10, 12), (4, 6)),
        ((0.9, "b"), (4, 6), (10, 12)),
    ]
    # the same pair from two windows: the higher probability wins
    again = (Window(0, 10), [(4, 6), (0, 2)], [((0.95, "d"), 1, 0)])
    spans, scored = merge_pairs([first, again])
    assert [(c, spans[h], spans[t]) for c, h, t in scored] == [((0.95, "d"), (0, 2), (4, 6))]


def test_one_entity_one_type_the_most_probable_reading_wins() -> None:
    tokens = "Mira Holt signs with Oakline FC in Eastholm".split()
    best = Quintuple(head=_entity(tokens, 0, 2, "per"), tail=_entity(tokens, 4, 6, "org"), relation="member_of")
    retyped = Quintuple(head=_entity(tokens, 4, 6, "loc"), tail=_entity(tokens, 7, 8, "loc"), relation="contain")
    overlapping = Quintuple(head=_entity(tokens, 1, 3, "per"), tail=_entity(tokens, 7, 8, "loc"), relation="peer")
    agreeing = Quintuple(head=_entity(tokens, 4, 6, "org"), tail=_entity(tokens, 7, 8, "loc"), relation="locate_at")
    assert one_reading_per_entity([best, retyped, overlapping, agreeing]) == [best, agreeing]
