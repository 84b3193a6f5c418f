"""The one content hasher: a stable SHA-256 of JSON-ready values, for cache keys, stage keys and ids;
and the SHA-256 of a file, for provenance."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

__all__ = ["content_key", "file_sha256"]


def content_key(**parts: Any) -> str:
    """A SHA-256 (hex) over the canonical JSON of ``parts``: key order does not matter, and values that
    JSON cannot hold (paths, dates) enter as their ``str``. Cache keys written by earlier kecpm releases
    were made this way, so they stay valid.

    >>> content_key(a=1, b=[2, 3]) == content_key(b=[2, 3], a=1)
    True
    """
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """The SHA-256 (hex) of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
