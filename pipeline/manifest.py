"""Provenance manifests: what produced a result (a run, a knowledge build, an experiment), so it can be
trusted, compared and replayed.

A manifest records the configuration (secrets removed), the sha256 of every input file, the model ids,
the prompt template versions, the kecpm version and the git revision of the checkout when there is one.
(A trained extractor's own description of itself is its checkpoint file, ``extractor.json``.)
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr

from .. import __version__
from ..hashing import file_sha256

__all__ = ["Manifest", "git_revision", "is_secret_name", "redact"]

# A field is secret when its name is, or ends in, a word that names a credential (api_key, access_token,
# Authorization-Token, client_secret), not when it merely contains one (max_tokens_param; api_key_env
# holds a variable's name) and never for a bare "key": stage_key, cache_key and run_key are provenance.
_SECRET_NAME = re.compile(
    r"(^|_)(api_?key|secret_?key|access_?key|private_?key|token|secret|password|passwd|authorization|credentials?)$"
)


def is_secret_name(name: str) -> bool:
    """Whether a setting's name says it holds a secret (``api_key``, ``X-Auth-Token``; not ``stage_key``).

    >>> [is_secret_name(n) for n in ("api_key", "Authorization", "client_secret", "key", "cache_key", "max_tokens")]
    [True, True, True, False, False, False]
    """
    return bool(_SECRET_NAME.search(name.lower().replace("-", "_")))


def git_revision(folder: str | Path | None = None) -> str | None:
    """The commit of the checkout kecpm runs from (``+dirty`` when it has changes), or None outside git."""
    folder = Path(folder) if folder is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit


def redact(value: Any) -> Any:
    """A JSON-ready copy of ``value`` with secrets removed: SecretStr values and keys that name a secret."""
    if isinstance(value, SecretStr):
        return "**********" if value.get_secret_value() else ""
    if isinstance(value, BaseModel):
        return redact(value.model_dump(mode="python"))
    if isinstance(value, Mapping):
        return {
            str(k): "**********" if v and isinstance(v, str) and is_secret_name(str(k)) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set):
        return [redact(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


class Manifest(BaseModel):
    """What a run was made of; written as ``manifest.json`` next to its results."""

    kind: str
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    kecpm_version: str = ""
    git_revision: str | None = None
    python: str = Field(default_factory=lambda: sys.version.split()[0])
    platform: str = Field(default_factory=platform.platform)
    config: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, str] = Field(default_factory=dict, description="path -> sha256")
    models: dict[str, str] = Field(default_factory=dict, description="role -> model id or path")
    templates: dict[str, str] = Field(default_factory=dict, description="role -> name@vN")
    outputs: dict[str, str] = Field(default_factory=dict, description="role -> path")
    extra: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def create(
        cls,
        kind: str,
        *,
        config: Any = None,
        inputs: Iterable[str | Path] = (),
        models: Mapping[str, str] | None = None,
        templates: Mapping[str, str] | None = None,
        outputs: Mapping[str, str | Path] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Manifest:
        return cls(
            kind=kind,
            kecpm_version=__version__,
            git_revision=git_revision(),
            config=redact(config) if config is not None else {},
            inputs={str(p): file_sha256(p) for p in inputs},
            models=dict(models or {}),
            templates=dict(templates or {}),
            outputs={k: str(v) for k, v in (outputs or {}).items()},
            extra=redact(dict(extra or {})),
        )

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))
