"""Where the real data lives: an explicit path, else ``$KECPM_DATA``, else ``../shared/data``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_ENV", "default_data_dir", "require_data_dir"]

DATA_ENV = "KECPM_DATA"


def default_data_dir(explicit: str | Path | None = None) -> Path | None:
    """The data folder to use, or None when none of the candidates exists.

    The candidates, in order: ``explicit``, ``$KECPM_DATA``, ``../shared/data`` relative to the
    current directory and to this checkout.
    """
    candidates: list[Path] = []
    if explicit is not None:
        return Path(explicit)
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    candidates.append(Path.cwd().parent / "shared" / "data")
    candidates.append(Path(__file__).resolve().parent.parent / "shared" / "data")
    for candidate in candidates:
        if (candidate / "jmere").is_dir() or (candidate / "mnre").is_dir():
            return candidate
    return None


def require_data_dir(explicit: str | Path | None = None) -> Path:
    """Like :func:`default_data_dir`, but a clear error when there is no data."""
    found = default_data_dir(explicit)
    if found is None or not found.is_dir():
        raise FileNotFoundError(
            "no JMERE/MNRE data found: pass a data path or set "
            f"{DATA_ENV}=/path/to/data (a folder with jmere/few_shot/seed_*/ and mnre/mnre_txt/); "
            "get few_shot.zip from the KECPM authors' repository and mnre_txt from the MNRE repository"
        )
    return found
