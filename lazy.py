"""Attributes of a package imported on first use, so that importing it stays light."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``where`` maps a name to the submodule (``.agent``) that
    defines it, imported when the name is first asked for (it pulls in a heavy library).

    >>> __getattr__ = lazy_attributes(__name__, {"KECPMPipeline": ".runnable"})  # doctest: +SKIP
    """

    def __getattr__(name: str) -> Any:
        if name in where:
            return getattr(importlib.import_module(where[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
