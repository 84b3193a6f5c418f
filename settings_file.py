"""Reading settings files (pipeline configs, experiment grids): TOML or YAML, with errors that name the file."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from .errors import KecpmError

__all__ = ["read_settings_file", "resolve_path"]


def read_settings_file(path: str | Path, *, what: str = "config") -> dict[str, Any]:
    """The table in a ``.toml``, ``.yaml`` or ``.yml`` file; FileNotFoundError or KecpmError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such {what} file") from None
    if path.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise KecpmError(f"{path}: not a valid {what} file: {exc}") from None
    elif path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise KecpmError(f"{path}: not a valid {what} file: {exc}") from None
    else:
        raise KecpmError(f"{path}: a {what} file must end in .toml, .yaml or .yml")
    if not isinstance(data, dict):
        raise KecpmError(f"{path}: the {what} must be a table of settings")
    return data


def resolve_path(base: Path, value: str | Path) -> Path:
    """``value`` with ``~`` expanded, taken from ``base`` when relative (paths in a file are the file's)."""
    value = Path(value).expanduser()
    return value if value.is_absolute() else base / value
