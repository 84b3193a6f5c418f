"""The ``kecpm`` command line.

Each module of this package adds its commands through a ``register(app)`` function, found at start-up,
so a stage's commands live beside each other and ``kecpm --help`` imports nothing heavy.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    name="kecpm",
    help="Few-shot joint multimodal entity-relation extraction (KECPM): data, retrieval, knowledge, "
    "extractor, evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_all() -> None:
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module.name.startswith("_"):
            continue
        importlib.import_module(f"{__name__}.{module.name}").register(app)


_register_all()


def main() -> None:
    """The ``kecpm`` command: a bad record or setting that a command did not catch is still told as one
    ``error:`` line per record (no traceback, no raw pydantic text), exit status 1."""
    from pydantic import ValidationError

    from ..errors import KecpmError
    from ._output import print_error

    try:
        app()
    except (ValidationError, KecpmError) as exc:
        print_error(exc)
        raise SystemExit(1) from None
