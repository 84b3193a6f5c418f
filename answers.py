"""The KECPM answer sentence, rendered and parsed: one codec for every stage that writes or reads it.

``The relation between Rafael Nadal (person) and Mery Perello (person) is "couple".``

Demonstrations shown to the LLM (retrieval), the generative extractor's target text and the paper's
scoring (eval) all write this sentence; the human demonstrations and generated answers are read back
with :func:`parse_answer`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .labels import parse_entity_type, parse_relation
from .records import Entity, Quintuple

__all__ = ["NO_RELATION", "ParsedAnswer", "parse_answer", "relation_sentence", "render_answer"]

NO_RELATION = "There is no mentioned relation in the original text."

_SENTENCE = re.compile(
    r"^\s*the relation between\s+(?P<head>.+?)\s*\((?P<head_type>[^()]+)\)\s+and\s+"
    r"(?P<tail>.+?)\s*\((?P<tail_type>[^()]+)\)\s+is\s+[\"'“”]?(?P<relation>[^\"'“”]+?)[\"'“”]?\s*\.?\s*$",
    re.IGNORECASE,
)
# A sentence ends at a ";" right after its closing quote (not the ";" inside a name such as "S&amp;P"
# or "Fire & amp ; Rescue"), at a newline, or where the next "The relation between" begins.
_BOUNDARY = re.compile(
    r"(?<=[.\"”'])\s*;|;\s*(?=the relation between)|\n|(?<=[.\"”])\s+(?=the relation between)", re.IGNORECASE
)


def relation_sentence(head: str, head_type: str, tail: str, tail_type: str, relation: str) -> str:
    """One answer sentence from its five strings, without a final period.

    >>> relation_sentence("Ann", "person", "Bo", "person", "couple")
    'The relation between Ann (person) and Bo (person) is "couple"'
    """
    return f'The relation between {head} ({head_type}) and {tail} ({tail_type}) is "{relation}"'


def render_answer(
    quintuples: Iterable[Quintuple], *, separator: str = " ", period: bool = True, empty: str = NO_RELATION
) -> str:
    """The answer for ``quintuples`` in natural names: the demonstrations' form by default
    (sentences ending in a period, joined by spaces; ``empty`` when there are none), the generative
    extractor's with ``separator="; ", period=False, empty=""``.

    >>> q = Quintuple(head=Entity(name="Ann", type="per"), tail=Entity(name="Bo", type="per"), relation="couple")
    >>> render_answer([q])
    'The relation between Ann (person) and Bo (person) is "couple".'
    """
    end = "." if period else ""
    sentences = [
        relation_sentence(q.head.name, q.head.type.natural, q.tail.name, q.tail.type.natural, q.relation.natural) + end
        for q in quintuples
    ]
    return separator.join(sentences) if sentences else empty


@dataclass
class ParsedAnswer:
    """What an answer held: its quintuples (each once, in order) and the sentences that did not parse."""

    quintuples: list[Quintuple] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)


def parse_answer(text: str, *, tokens: Sequence[str] | None = None) -> ParsedAnswer:
    """Read the quintuples of an answer; only the part before ``Reasoning:`` counts, and a sentence that
    does not parse (or names an unknown type or relation) is kept in ``invalid``, never raised.

    With the post's ``tokens``, an entity found in them (case-insensitively) gets its span (the first
    occurrence) and the post's spelling.

    >>> out = parse_answer('The relation between Ann (person) and Bo (person) is "couple"; garbage')
    >>> [q.surface() for q in out.quintuples], out.invalid
    ([('Ann', 'per', 'Bo', 'per', 'couple')], ['garbage'])
    >>> parse_answer(NO_RELATION).quintuples
    []
    """
    parsed = ParsedAnswer()
    seen: set[tuple[str, ...]] = set()
    statement = text.split("Reasoning:", 1)[0]
    for piece in _BOUNDARY.split(statement):
        piece = piece.strip()
        if not piece or piece.rstrip(".") == NO_RELATION.rstrip("."):
            continue
        match = _SENTENCE.match(piece)
        if match is None:
            parsed.invalid.append(piece)
            continue
        try:
            quintuple = Quintuple(
                head=_entity(match["head"], match["head_type"], tokens),
                tail=_entity(match["tail"], match["tail_type"], tokens),
                relation=parse_relation(match["relation"]),
            )
        except ValueError:
            parsed.invalid.append(piece)
            continue
        if quintuple.surface() not in seen:
            seen.add(quintuple.surface())
            parsed.quintuples.append(quintuple)
    return parsed


def _entity(name: str, type_name: str, tokens: Sequence[str] | None) -> Entity:
    name = " ".join(name.split())
    span = _find(name, tokens) if tokens else None
    if span is not None and tokens is not None:
        # A lower-casing tokenizer loses the post's spelling: take it back from the tokens.
        name = " ".join(tokens[span[0] : span[1]])
    return Entity(name=name, type=parse_entity_type(type_name.strip()), span=span)


def _find(name: str, tokens: Sequence[str]) -> tuple[int, int] | None:
    words = name.lower().split()
    lowered = [t.lower() for t in tokens]
    for start in range(len(tokens) - len(words) + 1):
        if lowered[start : start + len(words)] == words:
            return (start, start + len(words))
    return None
