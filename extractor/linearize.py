"""The generative model's target text: quintuples as the KECPM sentences, and the robust parser back.

``The relation between Rafael Nadal (person) and Mery Perello (person) is "couple"; ...``
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..labels import parse_entity_type, parse_relation
from ..records import Entity, Quintuple

__all__ = ["ParsedOutput", "linearize", "parse_linearized"]

_PIECE = re.compile(
    r"^\s*the relation between\s+(?P<head>.+?)\s*\((?P<head_type>[^()]+)\)\s+and\s+"
    r"(?P<tail>.+?)\s*\((?P<tail_type>[^()]+)\)\s+is\s+[\"'“”]?(?P<relation>[^\"'“”]+?)[\"'“”]?\s*\.?\s*$",
    re.IGNORECASE,
)


def linearize(quintuples: Sequence[Quintuple]) -> str:
    """The KECPM target sentence for some quintuples ("" for none).

    >>> from kecpm.records import Entity, Quintuple
    >>> q = Quintuple(head=Entity(name="Ann", type="per"), tail=Entity(name="Bo", type="per"), relation="couple")
    >>> linearize([q])
    'The relation between Ann (person) and Bo (person) is "couple"'
    """
    return "; ".join(
        f"The relation between {q.head.name} ({q.head.type.natural}) and {q.tail.name} ({q.tail.type.natural}) "
        f'is "{q.relation.natural}"'
        for q in quintuples
    )


@dataclass
class ParsedOutput:
    """What a generated string held: the valid quintuples and the pieces that did not parse."""

    quintuples: list[Quintuple] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)


def parse_linearized(text: str, *, tokens: Sequence[str] | None = None) -> ParsedOutput:
    """Parse a generated string; a piece that does not parse is kept in ``invalid``, never raised.

    With the post's ``tokens``, an entity found in them (case-insensitively) gets its span, the first
    occurrence, and the post's spelling.

    >>> out = parse_linearized('The relation between Ann (person) and Bo (person) is "couple"; garbage')
    >>> [q.relation.value for q in out.quintuples], out.invalid
    (['couple'], ['garbage'])
    """
    parsed = ParsedOutput()
    seen: set[tuple[str, ...]] = set()
    for piece in re.split(r";|\n", text):
        if not piece.strip():
            continue
        match = _PIECE.match(piece)
        if match is None:
            parsed.invalid.append(piece.strip())
            continue
        try:
            quintuple = Quintuple(
                head=_entity(match["head"], match["head_type"], tokens),
                tail=_entity(match["tail"], match["tail_type"], tokens),
                relation=parse_relation(match["relation"]),
            )
        except ValueError:
            parsed.invalid.append(piece.strip())
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
    return Entity(name=name, type=parse_entity_type(type_name), span=span)


def _find(name: str, tokens: Sequence[str]) -> tuple[int, int] | None:
    words = name.lower().split()
    lowered = [t.lower() for t in tokens]
    for start in range(len(tokens) - len(words) + 1):
        if lowered[start : start + len(words)] == words:
            return (start, start + len(words))
    return None
