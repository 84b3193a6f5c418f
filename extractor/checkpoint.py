"""The checkpoint format: a folder in Hugging Face's ``save_pretrained`` layout, and the formats before it.

Format 2 (what this kecpm writes):

- ``config.json``: the checkpoint card, ``"library": "kecpm"``: the kecpm version and format version, the
  model family, the label maps, the input template and parts, the training config, report and data (the
  posts' and files' SHA-256), then the family's own entries (its model config, the files it wrote);
- ``README.md``: the model card (:mod:`.model_card`, written with ``huggingface_hub.ModelCard``);
- the family's files (span-pair: ``model.safetensors`` and the tokenizer's files at the root; generative:
  a plain transformers folder ``model/``).

Format 1 (kecpm 0.1.0 before ``save_pretrained``) is still read: the same card as ``extractor.json``, with
the span-pair encoder's config in ``encoder/`` and its tokenizer in ``tokenizer/``. Anything else (another
version, a transformers folder, a folder without a card) is a :class:`CheckpointError` of one sentence that
names the folder and what to do. :func:`read_card` checks a card; which family loads a folder is the family
registry's business (:func:`kecpm.extractor.load_extractor`, in :mod:`.base`, above this module).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import __version__
from ..errors import KecpmError
from ..hashing import content_key, file_sha256
from ..labels import ENTITY_TYPES, RELATIONS
from ..prompts import PromptMessage, PromptTemplateFile
from ..records import Post
from .inputs import InputParts
from .training import FitReport, TrainConfig

__all__ = [
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "LEGACY_CARD_FILE",
    "LIBRARY",
    "MODEL_CARD_FILE",
    "CheckpointCard",
    "CheckpointError",
    "DataSummary",
    "TrainingData",
    "read_card",
    "write_card",
]

FORMAT_VERSION = 2
LIBRARY = "kecpm"
CONFIG_FILE = "config.json"
MODEL_CARD_FILE = "README.md"
LEGACY_CARD_FILE = "extractor.json"
_READABLE = {CONFIG_FILE: FORMAT_VERSION, LEGACY_CARD_FILE: 1}
"""The card file of each format this kecpm reads, and its format version."""


class CheckpointError(KecpmError):
    """A model folder that cannot be loaded: missing files, another format version or family,
    or labels this kecpm does not know."""


class DataSummary(BaseModel):
    """What one split of the training data was: its size and a SHA-256 over its posts (text, labels,
    image descriptions and knowledge as the model read them)."""

    model_config = ConfigDict(frozen=True)

    posts: int
    quintuples: int
    sha256: str

    @classmethod
    def of(cls, posts: Sequence[Post]) -> DataSummary:
        return cls(
            posts=len(posts),
            quintuples=sum(len(p.quintuples) for p in posts),
            sha256=content_key(posts=[p.model_dump(mode="json") for p in posts]),
        )


class TrainingData(BaseModel):
    """The data a model was fitted on (train) and selected on (val), and the SHA-256 of the files read."""

    model_config = ConfigDict(frozen=True)

    train: DataSummary
    val: DataSummary
    pseudo: DataSummary | None = Field(
        default=None, description="self-training: the pseudo-labelled posts trained on before train"
    )
    files: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="role (train, val, ...) -> {name, sha256} of each file given; the file name only, so a "
        "published card does not show the trainer's folders",
    )

    @classmethod
    def of(
        cls,
        train: Sequence[Post],
        val: Sequence[Post],
        files: Mapping[str, str | Path] | None = None,
        *,
        pseudo: Sequence[Post] = (),
    ) -> TrainingData:
        hashed = {role: {"name": Path(path).name, "sha256": file_sha256(path)} for role, path in (files or {}).items()}
        return cls(
            train=DataSummary.of(train),
            val=DataSummary.of(val),
            pseudo=DataSummary.of(pseudo) if pseudo else None,
            files=hashed,
        )


class CheckpointCard(BaseModel):
    """What ``config.json`` holds. Entries beyond these fields are the family's own (e.g. ``config``,
    ``files``), read with :meth:`entry`; they are written after the shared ones."""

    model_config = ConfigDict(frozen=True, extra="allow")

    library: str = LIBRARY
    kecpm_version: str | None = Field(default=__version__, description="the kecpm that wrote it (None: format 1)")
    format_version: int = FORMAT_VERSION
    family: str
    entity_types: list[str] = [t.value for t in ENTITY_TYPES]
    relations: list[str] = [r.value for r in RELATIONS]
    template: dict[str, Any]
    parts: InputParts
    train_config: TrainConfig | None = None
    report: FitReport | None = None
    training_data: TrainingData | None = None

    def entry(self, name: str) -> Any:
        """One of the family's entries; :class:`CheckpointError` when the card lacks it."""
        entries = self.model_extra or {}
        if name not in entries:
            raise CheckpointError(f"the checkpoint card of a {self.family!r} model has no {name!r} entry")
        return entries[name]

    def prompt_template(self) -> PromptTemplateFile:
        """The input template the model was trained with (kept in the card, not looked up by name)."""
        data = self.template
        return PromptTemplateFile(
            name=data["name"],
            version=data["version"],
            description=data.get("description", ""),
            messages=tuple(PromptMessage(**m) for m in data["messages"]),
        )


def write_card(directory: Path, card: CheckpointCard) -> None:
    """Write ``config.json`` (last, so its presence means the folder is complete), replacing a format-1
    card left in the same folder."""
    (directory / LEGACY_CARD_FILE).unlink(missing_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(card.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a checkpoint card (a JSON object is expected)")
    return data


def _card_file(directory: Path) -> tuple[Path, dict[str, Any]]:
    """The card file of a kecpm model folder and its content; the plain sentence for any other folder."""
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such model directory")
    config = directory / CONFIG_FILE
    if config.is_file():
        data = _read_json(config)
        if data.get("library") == LIBRARY:
            return config, data
        kind = f"a Hugging Face {data['model_type']!r} model" if "model_type" in data else "a model"
        raise CheckpointError(
            f"{directory} is {kind} folder, not a kecpm extractor: train an extractor on it "
            f"(`kecpm train --checkpoint {directory}`) or pass a folder written by `kecpm train` or `save_pretrained`"
        )
    legacy = directory / LEGACY_CARD_FILE
    if legacy.is_file():
        return legacy, _read_json(legacy)
    raise CheckpointError(
        f"{directory} is not a kecpm extractor folder (it has no {CONFIG_FILE}): pass a folder written by "
        "`kecpm train` or `save_pretrained`, or retrain a model from an older kecpm with `kecpm train`"
    )


def read_card(directory: Path) -> CheckpointCard:
    """The checked card of a model folder: its format version, its labels and the files it names."""
    path, data = _card_file(directory)
    # The version first: a card of another version may differ in any field.
    version = data.get("format_version")
    if version != _READABLE[path.name]:
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise CheckpointError(
                f"{directory} was written by a newer kecpm (checkpoint format {version}, this kecpm {__version__} "
                f"reads formats 1 to {FORMAT_VERSION}): upgrade kecpm (`pip install -U kecpm`) to load it"
            )
        raise CheckpointError(
            f"{directory} holds a model in an older or unknown kecpm format ({path.name} says format version "
            f"{version!r}) that kecpm {__version__} cannot read: retrain it with `kecpm train`, or load it with "
            "the kecpm version that wrote it"
        )
    for key, known in (("entity_types", [t.value for t in ENTITY_TYPES]), ("relations", [r.value for r in RELATIONS])):
        unknown = [label for label in data.get(key, []) if label not in known]
        if unknown or data.get(key) != known:
            raise CheckpointError(
                f"{directory}: its {key.replace('_', ' ')} {data.get(key)} differ from this kecpm's {known}"
                + (f" (unknown: {unknown})" if unknown else "")
            )
    for name in data.get("files", []):
        if not (directory / name).exists():
            raise CheckpointError(f"{directory}: {name} is missing")
    if path.name == LEGACY_CARD_FILE:
        data = {**data, "kecpm_version": None}  # format 1 did not record it
    try:
        return CheckpointCard.model_validate(data)
    except ValidationError as exc:
        raise CheckpointError(f"{path}: not a valid checkpoint card ({exc.error_count()} problems)\n{exc}") from None
