"""The ``kecpm`` command line.

Each module of this package adds its commands through a ``register(app)`` function, found at start-up,
so a stage's commands live beside each other and ``kecpm --help`` imports nothing heavy. The global
options (``--version``, ``--log-level``) come before the command: ``kecpm --log-level debug train ...``.
"""

from __future__ import annotations

import enum
import importlib
import logging
import pkgutil
import sys
from typing import Annotated

import typer

from .. import __version__

__all__ = ["LOG_LEVEL_ENV", "app", "configure_logging", "main"]

LOG_LEVEL_ENV = "KECPM_LOG_LEVEL"

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


class LogLevel(enum.StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (a test runner swaps it)."""

    @property  # type: ignore[override]
    def stream(self):  # type: ignore[no-untyped-def]
        return sys.stderr

    @stream.setter
    def stream(self, _value):  # type: ignore[no-untyped-def]
        pass


def configure_logging(level: str) -> None:
    """kecpm's loggers (``kecpm.*``) at ``level`` on stderr; other libraries' stay at Python's default
    (warnings and errors only). Called again, it replaces its own handler, never adds one."""
    logger = logging.getLogger("kecpm")
    logger.setLevel(level.upper())
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(
        logging.Formatter("%(levelname)s %(name)s: %(message)s" if level == "debug" else "%(message)s")
    )
    logger.addHandler(handler)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"kecpm {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print kecpm's version and exit."),
    ] = False,
    log_level: Annotated[
        LogLevel,
        typer.Option(
            "--log-level",
            envvar=LOG_LEVEL_ENV,
            case_sensitive=False,
            help="How much kecpm logs (to stderr); other libraries log warnings and errors only.",
        ),
    ] = LogLevel.info,
) -> None:
    configure_logging(log_level.value)


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
