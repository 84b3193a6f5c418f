"""Posts longer than a model's window, read in overlapping windows of whole words.

The policy (span-pair family; :class:`~kecpm.extractor.SpanPairConfig` holds its two settings):

- A post whose text fits the model's limit is read in one pass, exactly as before windows existed.
- A longer post is cut into windows of whole words (:func:`plan_windows`): each window's words cost at
  most ``budget`` subword tokens, as the model's tokenizer splits them, and each window starts
  ``overlap`` words before the previous one ended; the stride (how far a window starts after the
  previous one) is its predecessor's word count minus ``overlap``. When any ``2 x overlap`` consecutive
  words fit in a window, every span of up to ``overlap + 1`` words lies wholly inside some window (with
  the defaults, 16 words of overlap in windows of about 120 tokens of text, every span of up to 8 words
  the span-pair model reads). Each window is read with
  the post's image description and knowledge, fitted into what the window leaves of the limit by the
  input assembler's truncation policy.
- Spans found in a window are moved back to the post's tokens (:func:`shift`), the pairs found in
  several windows are merged (:func:`merge_pairs`: the highest probability of a pair wins), and the
  post's quintuples are then made consistent (:func:`one_reading_per_entity`): taken from the most
  probable down, a quintuple is kept only when each of its entities is an entity already kept with the
  same type, or overlaps none. So an entity has one type, the type of its most probable quintuple
  (max, not mean), and overlapping readings of one place do not both survive.
- Relations between entities that never share a window are not found.
- Training: a post longer than its window is split the same way (:func:`window_post`); a gold pair
  whose entities share no window is not learnt as a pair (counted), though each entity is still labelled
  in every window that holds it (:func:`window_entities`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import Problem
from ..records import Entity, Post, Quintuple
from .inputs import InputTooLong

__all__ = [
    "Window",
    "merge_pairs",
    "one_reading_per_entity",
    "plan_windows",
    "shift",
    "unshared_pairs",
    "window_entities",
    "window_post",
]

Span = tuple[int, int]


@dataclass(frozen=True)
class Window:
    """Words ``start:end`` of a post's tokens."""

    start: int
    end: int


def plan_windows(word_costs: Sequence[int], *, budget: int, overlap: int, record: str) -> list[Window]:
    """Windows of whole words covering every word: each costs at most ``budget`` subword tokens, and
    each starts ``overlap`` words before the previous one ended (fewer when the next word would not fit
    otherwise; at least one word further on). :class:`InputTooLong` for a word that alone needs more
    than ``budget`` tokens.

    >>> plan_windows([1] * 10, budget=4, overlap=1, record="p")
    [Window(start=0, end=4), Window(start=3, end=7), Window(start=6, end=10)]
    """
    if not word_costs:
        return []
    windows: list[Window] = []
    start = 0
    while True:
        end, total = start, 0
        while end < len(word_costs) and total + word_costs[end] <= budget:
            total += word_costs[end]
            end += 1
        if end == start:
            raise InputTooLong(
                Problem(
                    f"word {start + 1} alone needs {word_costs[start]} tokens, over the {budget} of a window; "
                    "split or remove that word",
                    record=record,
                )
            )
        windows.append(Window(start, end))
        if end == len(word_costs):
            return windows
        start = max(start + 1, end - overlap)
        # the next window must reach past this one's end: give up overlap until word `end` fits
        while start < end and sum(word_costs[start : end + 1]) > budget:
            start += 1


def shift(span: Span, offset: int) -> Span:
    return (span[0] + offset, span[1] + offset)


def _inside(span: Span | None, window: Window) -> bool:
    return span is not None and window.start <= span[0] and span[1] <= window.end


def _moved(entity: Entity, window: Window) -> Entity:
    assert entity.span is not None
    return entity.model_copy(update={"span": shift(entity.span, -window.start)})


def window_post(post: Post, window: Window) -> Post:
    """The post's words in ``window``, with its image descriptions and knowledge, and the gold quintuples
    whose two entities lie inside it (spans moved to the window's words)."""
    quintuples = [
        Quintuple(head=_moved(q.head, window), tail=_moved(q.tail, window), relation=q.relation)
        for q in post.quintuples
        if _inside(q.head.span, window) and _inside(q.tail.span, window)
    ]
    tokens = post.tokens[window.start : window.end]
    # valid by construction (whole words, spans moved with them): no need to validate again
    return post.model_copy(update={"tokens": tokens, "text": " ".join(tokens), "quintuples": quintuples})


def window_entities(post: Post, window: Window) -> list[Entity]:
    """The post's distinct gold entities lying inside ``window``, spans moved to the window's words."""
    return [_moved(e, window) for e in post.entities() if _inside(e.span, window)]


def unshared_pairs(post: Post, windows: Sequence[Window]) -> int:
    """How many of the post's gold quintuples have no window holding both their entities."""
    return sum(not any(_inside(q.head.span, w) and _inside(q.tail.span, w) for w in windows) for q in post.quintuples)


def merge_pairs(
    found: Sequence[tuple[Window, Sequence[Span], Sequence[tuple[tuple[float, ...], int, int]]]],
) -> tuple[list[Span], list[tuple[tuple[float, ...], int, int]]]:
    """Per window ``(window, its spans, its scored pairs (choice, head index, tail index))``, where a
    choice starts with the pair's probability: the post's spans (sorted) and its pairs over them, one per
    ordered pair of spans, the most probable choice of any window (the first window's on a tie)."""
    best: dict[tuple[Span, Span], tuple[float, ...]] = {}
    for window, spans, scored in found:
        for choice, head, tail in scored:
            key = (shift(spans[head], window.start), shift(spans[tail], window.start))
            if key not in best or choice[0] > best[key][0]:
                best[key] = choice
    merged_spans = sorted({span for key in best for span in key})
    index = {span: k for k, span in enumerate(merged_spans)}
    return merged_spans, [(choice, index[head], index[tail]) for (head, tail), choice in best.items()]


def one_reading_per_entity(quintuples: Sequence[Quintuple]) -> list[Quintuple]:
    """``quintuples`` (most probable first) without those that read a place of the post otherwise than a
    more probable one did: another type for the same span, or a span overlapping another entity's."""
    kept: list[Quintuple] = []
    entities: dict[Span, Entity] = {}
    for q in quintuples:
        if all(_agrees(e, entities) for e in (q.head, q.tail)):
            kept.append(q)
            for e in (q.head, q.tail):
                assert e.span is not None
                entities[e.span] = e
    return kept


def _agrees(entity: Entity, entities: dict[Span, Entity]) -> bool:
    assert entity.span is not None
    same = entities.get(entity.span)
    if same is not None:
        return same.type == entity.type
    return all(not (entity.span[0] < b and a < entity.span[1]) for a, b in entities)
