"""A pytest plugin for test runs from a kecpm checkout (``-p kecpm.testing.pytest_plugin``, set in
pyproject.toml's addopts).

The repository root is the package ``kecpm`` itself (it holds ``__init__.py``), so as the rootdir pytest
would collect it as a test package named after the checkout's folder and import its ``__init__.py``
under that name: that fails for a folder such as ``kecpm-ci`` (not an identifier; the relative imports
have no parent). The root is collected as a plain directory instead; test modules keep their names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_CHECKOUT = Path(__file__).resolve().parent.parent

__all__ = ["pytest_collect_directory"]


def pytest_collect_directory(path: Path, parent: Any) -> Any:
    import pytest

    if path.resolve() == _CHECKOUT:
        return pytest.Dir.from_parent(parent, path=path)
    return None
