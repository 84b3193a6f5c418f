"""Errors that name the record and the problem."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = ["DataError", "KecpmError", "Problem", "describe_validation_error", "validation_lines"]


class KecpmError(Exception):
    """Base class of kecpm's own errors."""


class Problem:
    """One problem found in one record of one source."""

    __slots__ = ("line", "message", "record", "source")

    def __init__(
        self,
        message: str,
        *,
        source: str | Path | None = None,
        line: int | None = None,
        record: str | None = None,
    ) -> None:
        self.message = message
        self.source = str(source) if source is not None else None
        self.line = line
        self.record = record

    def where(self) -> str:
        parts = []
        if self.source is not None:
            parts.append(self.source if self.line is None else f"{self.source}:{self.line}")
        elif self.line is not None:
            parts.append(f"line {self.line}")
        if self.record is not None:
            parts.append(f"record {self.record!r}")
        return ", ".join(parts)

    def __str__(self) -> str:
        where = self.where()
        return f"{where}: {self.message}" if where else self.message

    def __repr__(self) -> str:
        return f"Problem({str(self)!r})"

    def to_dict(self) -> dict[str, object]:
        return {"source": self.source, "line": self.line, "record": self.record, "message": self.message}


class DataError(KecpmError, ValueError):
    """Bad input data; carries every problem found, each naming its file, line or record."""

    def __init__(self, problems: list[Problem] | Problem) -> None:
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        head = "; ".join(str(p) for p in self.problems[:5])
        more = f" (+{len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
        super().__init__(head + more)


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem of a pydantic ValidationError as one line: ``field: message``."""
    error = exc.errors()[0]
    location = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{location}: {message}" if location else message


def validation_lines(exc: ValidationError) -> list[str]:
    """A pydantic ValidationError as plain lines, one per record: ``<record>: field: message; ...``.

    The record is the model's name, or ``record N`` (1-based) for errors under a list position; pydantic's
    echo of the input, its error codes and its documentation links are left out.
    """
    lines: dict[str, list[str]] = {}
    for error in exc.errors():
        location = list(error["loc"])
        record = f"record {location.pop(0) + 1}" if location and isinstance(location[0], int) else exc.title
        message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        field = ".".join(str(part) for part in location)
        lines.setdefault(record, []).append(f"{field}: {message}" if field else message)
    return [f"{record}: {'; '.join(messages)}" for record, messages in lines.items()]
