"""The checkpoint format: a directory (``save_pretrained`` style) with the checkpoint card
``extractor.json`` and the weights and tokenizer files of the model family.

The card holds the format version, the model family, the label maps, the input template and parts,
the training config and report, and the family's own entries (its model config, the files it wrote).
:func:`read_card` checks it. Which family loads a directory is the family registry's business
(:func:`kecpm.extractor.load_extractor`, in :mod:`.base`, above this module).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import KecpmError
from ..labels import ENTITY_TYPES, RELATIONS
from ..prompts import PromptMessage, PromptTemplateFile
from .inputs import InputParts
from .training import FitReport, TrainConfig

__all__ = [
    "CARD_FILE",
    "FORMAT_VERSION",
    "CheckpointCard",
    "CheckpointError",
    "read_card",
    "write_card",
]

FORMAT_VERSION = 1
CARD_FILE = "extractor.json"


class CheckpointError(KecpmError):
    """A model directory that cannot be loaded: missing files, another format version or family,
    or labels this kecpm does not know."""


class CheckpointCard(BaseModel):
    """What ``extractor.json`` holds. Entries beyond these fields are the family's own (e.g. ``config``,
    ``files``), read with :meth:`entry`; they are written after the shared ones."""

    model_config = ConfigDict(frozen=True, extra="allow")

    format_version: int = FORMAT_VERSION
    family: str
    entity_types: list[str] = [t.value for t in ENTITY_TYPES]
    relations: list[str] = [r.value for r in RELATIONS]
    template: dict[str, Any]
    parts: InputParts
    train_config: TrainConfig | None = None
    report: FitReport | None = None

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
    (directory / CARD_FILE).write_text(json.dumps(card.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")


def read_card(directory: Path) -> CheckpointCard:
    """The checked card of a model directory: its version, its labels and the files it names."""
    path = directory / CARD_FILE
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such model directory")
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a kecpm extractor directory ({CARD_FILE} is missing)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc.msg})") from None
    # The version first: a card of another version may differ in any field.
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{directory}: format version {version!r}, but this kecpm reads version {FORMAT_VERSION}; "
            "retrain the model or use the kecpm version that wrote it"
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
    try:
        return CheckpointCard.model_validate(data)
    except ValidationError as exc:
        raise CheckpointError(f"{path}: not a valid checkpoint card ({exc.error_count()} problems)\n{exc}") from None
