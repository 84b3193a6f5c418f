"""Printing helpers shared by the commands."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import DataError, validation_lines

# soft_wrap: long paths and messages stay on one line, so they can be grepped and copied.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    table = Table(title=title)
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    console.print(table)


def error_lines(exc: BaseException) -> list[str]:
    """What a user is told of an error: one line per record of a pydantic ValidationError (no raw
    validation text, no links) or of a DataError, else the error's own message."""
    if isinstance(exc, ValidationError):
        return validation_lines(exc)
    if isinstance(exc, DataError):
        return [str(problem) for problem in exc.problems]
    return [str(exc)]


def print_error(exc: BaseException, *, to: Console = err_console) -> None:
    """Print an error (on stderr unless told), one ``error:`` line per record (see :func:`error_lines`)."""
    for line in error_lines(exc):
        to.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
