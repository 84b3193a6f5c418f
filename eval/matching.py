"""From gold records and predictions to match counts, per record and per relation.

Everything the metrics report is computed from the count arrays built here, so the metric functions,
the bootstrap and the scorer all agree by construction. Two matchers:

- ``paper``: the KECPM release's rules. Each quintuple becomes the release's answer sentence
  ``The relation between H (person) and T (location) is "rel"``, normalised (underscores to spaces,
  newlines and `` #`` removed, quotes removed, stripped) and compared as a whole string. Predictions
  are de-duplicated per record; gold quintuples are counted as often as they occur.
- ``standard``: per-field matching of normalised names (or spans), canonical types and relation, as
  sets per record (gold de-duplicated too), optionally undirected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..answers import relation_sentence
from ..errors import DataError, Problem
from ..labels import RELATIONS, EntityType, parse_entity_type, parse_relation
from ..predictions import PredictedQuintuple, PredictionRecord
from ..records import Post, Quintuple, Span

__all__ = [
    "CORRECT",
    "GOLD",
    "PREDICTED",
    "UNKNOWN_RELATION",
    "Counts",
    "Item",
    "Match",
    "Mode",
    "count_matches",
    "normalise_name",
    "paper_sentence",
]

Mode = Literal["paper", "standard"]
Match = Literal["surface", "span"]

# Column layout of the count arrays: one column per relation (RELATIONS order), then one for
# predictions whose relation is unknown (only in lenient scoring); last axis: correct, predicted, gold.
UNKNOWN_RELATION = len(RELATIONS)
CORRECT, PREDICTED, GOLD = 0, 1, 2
_RELATION_INDEX = {relation.value: index for index, relation in enumerate(RELATIONS)}
_NATURAL_TYPE = {t.value: t.natural for t in EntityType}


@dataclass(frozen=True)
class Item:
    """One quintuple as the scorer sees it: raw strings, canonical where the label is known."""

    head: str
    head_type: str
    tail: str
    tail_type: str
    relation: str
    head_span: Span | None = None
    tail_span: Span | None = None
    problem: str | None = None  # why the quintuple is invalid; None when it is valid

    @property
    def column(self) -> int:
        return _RELATION_INDEX.get(self.relation, UNKNOWN_RELATION)


def _canonical(value: str, parse: Any) -> tuple[str, str | None]:
    try:
        return parse(value).value, None
    except ValueError as exc:
        return value, str(exc)


def _item_from_fields(
    head: str, head_type: str, tail: str, tail_type: str, relation: str, head_span: Any = None, tail_span: Any = None
) -> Item:
    head_type, head_problem = _canonical(head_type, parse_entity_type)
    tail_type, tail_problem = _canonical(tail_type, parse_entity_type)
    relation, relation_problem = _canonical(relation, parse_relation)
    problems = [p for p in (head_problem, tail_problem, relation_problem) if p]
    return Item(
        head,
        head_type,
        tail,
        tail_type,
        relation,
        tuple(head_span) if head_span is not None else None,
        tuple(tail_span) if tail_span is not None else None,
        "; ".join(problems) or None,
    )


def _as_item(value: Any) -> Item:
    if isinstance(value, Quintuple):
        return Item(*value.surface(), value.head.span, value.tail.span)
    if isinstance(value, Mapping):
        value = PredictedQuintuple.model_validate(value)
    if isinstance(value, PredictedQuintuple):
        return _item_from_fields(
            value.head, value.head_type, value.tail, value.tail_type, value.relation, value.head_span, value.tail_span
        )
    if isinstance(value, (tuple, list)) and len(value) == 5 and all(isinstance(v, str) for v in value):
        return _item_from_fields(*value)
    raise TypeError(
        f"cannot read {type(value).__name__} as a quintuple: give a Quintuple, a PredictedQuintuple, "
        "a dict in the predictions format, or a (head, head_type, tail, tail_type, relation) tuple"
    )


def _as_record(value: Any, position: int) -> tuple[list[Item], int | None]:
    """The record's items and, when it was read from a file, its line."""
    if isinstance(value, Post):
        return [_as_item(q) for q in value.quintuples], None
    if isinstance(value, PredictionRecord):
        return [_as_item(q) for q in value.quintuples], value.line
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"record {position}: expected a Post, a PredictionRecord or a list of quintuples")
    if value and all(isinstance(v, str) for v in value):
        raise TypeError(f"record {position} looks like one quintuple: wrap it in a list (one list per record)")
    return [_as_item(q) for q in value], None


def normalise_name(name: str) -> str:
    """An entity name as compared: underscores to spaces, quotes and newlines removed, stripped.

    >>> normalise_name(" Macy's_Parade\\n")
    'Macys Parade'
    """
    return name.replace("_", " ").replace("\n", "").replace('"', "").replace("'", "").strip()


def _polish(sentence: str, *, drop_quotes: bool) -> str:
    # The release's normalisation, in its order; its micro scorer drops quotes, its macro scorer keeps
    # them (it reads the relation back from between the last pair of double quotes).
    sentence = sentence.replace("_", " ").replace("\n", "").replace(" #", "")
    if drop_quotes:
        sentence = sentence.replace('"', "").replace("'", "")
    return sentence.strip()


def paper_sentence(item: Item, *, reversed_gold: bool = False, drop_quotes: bool = True) -> str:
    """The release's answer sentence for a quintuple, normalised as the release does.

    ``reversed_gold`` builds the second form the release adds for every gold quintuple (tail first,
    and no space before the head's type: a prediction written in the answer format never equals it,
    which is why paper matching is directed in effect).

    >>> paper_sentence(Item("Ann", "per", "Bo", "per", "couple"))
    'The relation between Ann (person) and Bo (person) is couple'
    """
    head_type = _NATURAL_TYPE.get(item.head_type, item.head_type)
    tail_type = _NATURAL_TYPE.get(item.tail_type, item.tail_type)
    if reversed_gold:
        # The release's own second form, deliberately unlike the answer sentence (see above).
        text = f'The relation between {item.tail} ({tail_type}) and {item.head}({head_type}) is "{item.relation}"'
    else:
        text = relation_sentence(item.head, head_type, item.tail, tail_type, item.relation)
    return _polish(text, drop_quotes=drop_quotes)


@dataclass
class Counts:
    """Match counts of a set of records; every metric is a function of these arrays.

    ``micro`` / ``macro``: ``(records, 22, 3)`` int arrays (relation columns plus the unknown-relation
    column; correct, predicted, gold). They differ only in paper mode, where the release's two scorers
    normalise quotes differently. ``entity`` / ``pair``: ``(records, 3)``. ``confusion``: ``(21, 21)``,
    gold relation (rows) against predicted relation (columns) over matched entity pairs.
    """

    micro: np.ndarray
    macro: np.ndarray
    entity: np.ndarray
    pair: np.ndarray
    confusion: np.ndarray
    invalid: list[Problem] = field(default_factory=list)

    @property
    def n_records(self) -> int:
        return int(self.micro.shape[0])


def _entity_key(name: str, type_: str, span: Span | None, match: Match) -> tuple[Any, str]:
    return (span if match == "span" else normalise_name(name), type_)


def _keys(item: Item, match: Match, directed: bool) -> tuple[Any, Any, Any] | None:
    """(quintuple key, entity-pair key, pair+relation key), or None when it cannot be keyed."""
    if match == "span" and (item.head_span is None or item.tail_span is None):
        return None
    head = _entity_key(item.head, item.head_type, item.head_span, match)
    tail = _entity_key(item.tail, item.tail_type, item.tail_span, match)
    ends = (head, tail) if directed else tuple(sorted((head, tail), key=repr))
    pair_ends = (head[0], tail[0]) if directed else tuple(sorted((head[0], tail[0]), key=repr))
    return (*ends, item.relation), ends, (*pair_ends, item.relation)


def _count_paper(gold: list[Item], pred: list[Item], micro: np.ndarray, macro: np.ndarray) -> None:
    for target, drop_quotes in ((micro, True), (macro, False)):
        ground: set[str] = set()
        for item in gold:
            target[item.column, GOLD] += 1
            ground.add(paper_sentence(item, drop_quotes=drop_quotes))
            ground.add(paper_sentence(item, reversed_gold=True, drop_quotes=drop_quotes))
        predicted: dict[str, int] = {}
        for item in pred:
            predicted.setdefault(paper_sentence(item, drop_quotes=drop_quotes), item.column)
        for sentence, column in predicted.items():
            target[column, PREDICTED] += 1
            target[column, CORRECT] += sentence in ground


def _count_standard(gold: list[Item], pred: list[Item], counts: np.ndarray, match: Match, directed: bool) -> None:
    gold_keys = {keys[0]: item.column for item in gold if (keys := _keys(item, match, directed))}
    pred_keys: dict[Any, int] = {}
    for item in pred:
        keys = _keys(item, match, directed)
        # An unkeyable prediction (no span in span mode) is still a prediction, one that cannot match.
        key = keys[0] if keys else object()
        pred_keys.setdefault(key, item.column)
    for column in gold_keys.values():
        counts[column, GOLD] += 1
    for key, column in pred_keys.items():
        counts[column, PREDICTED] += 1
        counts[column, CORRECT] += key in gold_keys


def _set_counts(gold: set[Any], pred: set[Any]) -> tuple[int, int, int]:
    return len(gold & pred), len(pred), len(gold)


def _count_confusion(gold: list[Item], pred: list[Item], confusion: np.ndarray, match: Match, directed: bool) -> None:
    def by_pair(items: list[Item]) -> dict[Any, list[int]]:
        pairs: dict[Any, list[int]] = {}
        for item in items:
            keys = _keys(item, match, directed)
            if keys and item.column != UNKNOWN_RELATION and item.column not in pairs.setdefault(keys[1], []):
                pairs[keys[1]].append(item.column)
        return pairs

    predicted = by_pair(pred)
    for pair, gold_columns in by_pair(gold).items():
        pred_columns = predicted.get(pair)
        if not pred_columns:
            continue
        for column in gold_columns:
            if column in pred_columns:
                confusion[column, column] += 1
        # The rest are paired in order of mention: a confusion, not a correct answer.
        rest_gold = [c for c in gold_columns if c not in pred_columns]
        rest_pred = [c for c in pred_columns if c not in gold_columns]
        for gold_column, pred_column in zip(rest_gold, rest_pred, strict=False):
            confusion[gold_column, pred_column] += 1


def count_matches(
    y_true: Sequence[Any],
    y_pred: Sequence[Any],
    *,
    mode: Mode = "paper",
    directed: bool = True,
    match: Match = "surface",
    lenient: bool = False,
) -> Counts:
    """Count matches record by record; see the module docstring for the rules.

    Raises DataError naming every invalid prediction (unknown type or relation, or no span when
    ``match="span"``) unless ``lenient``, which counts them as false positives and lists them in
    ``Counts.invalid``. Gold quintuples must always be valid.
    """
    if mode == "paper" and (not directed or match != "surface"):
        raise ValueError("paper mode is the release's directed surface matching: use mode='standard'")
    if len(y_true) != len(y_pred):
        raise DataError(Problem(f"{len(y_pred)} prediction records for {len(y_true)} gold records"))
    n = len(y_true)
    width = len(RELATIONS) + 1
    micro = np.zeros((n, width, 3), dtype=np.int64)
    macro = np.zeros((n, width, 3), dtype=np.int64) if mode == "paper" else micro
    entity = np.zeros((n, 3), dtype=np.int64)
    pair = np.zeros((n, 3), dtype=np.int64)
    confusion = np.zeros((len(RELATIONS), len(RELATIONS)), dtype=np.int64)
    problems: list[Problem] = []
    for index, (gold_record, pred_record) in enumerate(zip(y_true, y_pred, strict=True)):
        gold, _ = _as_record(gold_record, index)
        pred, line = _as_record(pred_record, index)
        for order, item in enumerate(gold, start=1):
            if item.problem or (match == "span" and (item.head_span is None or item.tail_span is None)):
                reason = item.problem or "no span (match='span' needs spans)"
                raise DataError(Problem(f"gold quintuple {order}: {reason}", record=str(index)))
        for order, item in enumerate(pred, start=1):
            reason = item.problem
            if not reason and match == "span" and (item.head_span is None or item.tail_span is None):
                reason = "no span (match='span' needs spans)"
            if reason:
                problems.append(Problem(f"prediction {index}, quintuple {order}: {reason}", line=line))
        if mode == "paper":
            _count_paper(gold, pred, micro[index], macro[index])
        else:
            _count_standard(gold, pred, micro[index], match, directed)
        keyed_gold = [keys for item in gold if (keys := _keys(item, match, directed))]
        keyed_pred = [keys for item in pred if (keys := _keys(item, match, directed))]
        entity[index] = _set_counts(
            {end for keys in keyed_gold for end in keys[1]}, {end for keys in keyed_pred for end in keys[1]}
        )
        pair[index] = _set_counts({keys[2] for keys in keyed_gold}, {keys[2] for keys in keyed_pred})
        _count_confusion(gold, pred, confusion, match, directed)
    if problems and not lenient:
        raise DataError(problems)
    return Counts(micro, macro, entity, pair, confusion, problems)
