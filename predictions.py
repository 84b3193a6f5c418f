"""The predictions format every stage writes and ``kecpm eval`` reads.

JSON Lines, one line per input record, in input order::

    {"index": 0, "img_id": "...", "quintuples": [{"head": "Rafael Nadal", "head_type": "per",
     "tail": "Mery Perello", "tail_type": "per", "relation": "couple"}]}

Types are the dataset's short names, relations the dataset's names (underscores). Each quintuple may
also carry ``head_span`` / ``tail_span`` (``[start, end)`` token offsets) and ``score``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import DataError, Problem, describe_validation_error
from .records import Entity, Quintuple, Span

__all__ = [
    "PredictedQuintuple",
    "PredictionRecord",
    "read_predictions",
    "read_predictions_lenient",
    "write_predictions",
]


class PredictedQuintuple(BaseModel):
    """One predicted quintuple as it stands in a predictions line."""

    model_config = ConfigDict(extra="forbid")

    head: str
    head_type: str
    tail: str
    tail_type: str
    relation: str
    head_span: Span | None = None
    tail_span: Span | None = None
    score: float | None = None

    @classmethod
    def from_quintuple(cls, quintuple: Quintuple, *, score: float | None = None) -> PredictedQuintuple:
        return cls(
            head=quintuple.head.name,
            head_type=quintuple.head.type.value,
            tail=quintuple.tail.name,
            tail_type=quintuple.tail.type.value,
            relation=quintuple.relation.value,
            head_span=quintuple.head.span,
            tail_span=quintuple.tail.span,
            score=score,
        )

    def to_quintuple(self) -> Quintuple:
        """The validated Quintuple; ValueError when a type or relation is unknown."""
        return Quintuple(
            head=Entity(name=self.head, type=self.head_type, span=self.head_span),
            tail=Entity(name=self.tail, type=self.tail_type, span=self.tail_span),
            relation=self.relation,
        )


class PredictionRecord(BaseModel):
    """One line of a predictions file."""

    model_config = ConfigDict(extra="allow")

    index: int = Field(ge=0)
    img_id: str | None = None
    quintuples: list[PredictedQuintuple] = Field(default_factory=list)
    # Set by the readers so later checks (unknown labels) can name the line; never written.
    line: int | None = Field(default=None, exclude=True)


def write_predictions(
    path: str | Path,
    predictions: Iterable[Sequence[Quintuple] | PredictionRecord],
    *,
    img_ids: Sequence[str | None] | None = None,
) -> Path:
    """Write one line per record, in order; items are quintuple lists or ready PredictionRecords."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for index, item in enumerate(predictions):
            if not isinstance(item, PredictionRecord):
                item = PredictionRecord(
                    index=index,
                    img_id=img_ids[index] if img_ids is not None else None,
                    quintuples=[PredictedQuintuple.from_quintuple(q) for q in item],
                )
            handle.write(json.dumps(item.model_dump(mode="json", exclude_none=True), ensure_ascii=False) + "\n")
    return path


def read_predictions(path: str | Path) -> list[PredictionRecord]:
    """Read a predictions file; DataError listing every malformed line (each named by its number).

    Types and relations are kept as strings here: judging them is the scorer's job (strict or lenient).
    """
    path = Path(path)
    records: list[PredictionRecord] = []
    problems: list[Problem] = []
    for number, raw, problem in _json_lines(path):
        if problem is not None:
            problems.append(problem)
            continue
        try:
            record = PredictionRecord.model_validate(raw)
        except ValidationError as exc:
            problems.append(Problem(describe_validation_error(exc), source=path, line=number))
            continue
        record.line = number
        records.append(record)
    if problems:
        raise DataError(problems)
    for position, record in enumerate(records):
        if record.index != position:
            problems.append(
                Problem(f"index {record.index} out of order (expected {position})", source=path, line=record.line)
            )
    if problems:
        raise DataError(problems)
    return records


def _json_lines(path: Path) -> Iterator[tuple[int, Any, Problem | None]]:
    """Each non-blank line's number and JSON value, or the problem that kept it from parsing."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, None, Problem(f"malformed JSON: {exc.msg}", source=path, line=number)
                continue
            yield number, raw, None


def read_predictions_lenient(path: str | Path) -> tuple[list[PredictionRecord], list[Problem]]:
    """Read what can be read, and say what could not, each problem naming its line.

    Every non-blank line stays the record at its position (so records keep their alignment with the
    gold): a line that is not a JSON object becomes a record without quintuples, a malformed quintuple
    is dropped, an ``index`` out of order is reported and replaced by the position.

    >>> records, problems = read_predictions_lenient("run/predictions.jsonl")  # doctest: +SKIP
    """
    path = Path(path)
    records: list[PredictionRecord] = []
    problems: list[Problem] = []
    for number, raw, problem in _json_lines(path):
        position = len(records)
        record = PredictionRecord(index=position, line=number)
        records.append(record)
        if problem is not None:
            problems.append(problem)
            continue
        if not isinstance(raw, dict):
            problems.append(Problem("a predictions line must be a JSON object", source=path, line=number))
            continue
        if raw.get("index") != position:
            problems.append(
                Problem(f"index {raw.get('index')!r} out of order (expected {position})", source=path, line=number)
            )
        if isinstance(raw.get("img_id"), str):
            record.img_id = raw["img_id"]
        quintuples = raw.get("quintuples", [])
        if not isinstance(quintuples, list):
            problems.append(Problem("quintuples must be a list", source=path, line=number))
            continue
        for order, item in enumerate(quintuples, start=1):
            try:
                record.quintuples.append(PredictedQuintuple.model_validate(item))
            except ValidationError as exc:
                error = exc.errors()[0]
                where = ".".join(str(p) for p in error["loc"])
                message = f"quintuple {order}: {where + ': ' if where else ''}{error['msg']}"
                problems.append(Problem(message, source=path, line=number))
    return records, problems
