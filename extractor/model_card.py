"""The model card of a saved extractor: ``README.md``, written with ``huggingface_hub.ModelCard``.

Its YAML header carries what the Hub indexes (``library_name: kecpm``, tags, ``base_model`` when the
encoder is a Hub model) and, under ``kecpm``, the same facts for programs: the kecpm version, the family,
the inputs, the training data's SHA-256 and the val scores. The text says the same for people, and how
to load the model. Everything comes from the checkpoint card, so the two never disagree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..labels import ENTITY_TYPES, RELATIONS
from .checkpoint import FORMAT_VERSION, MODEL_CARD_FILE, CheckpointCard

__all__ = ["model_card_metadata", "write_model_card"]

_TAGS = ["kecpm", "jmere", "multimodal", "entity-relation-extraction", "few-shot"]


def _inputs(card: CheckpointCard, max_length: int | None) -> dict[str, Any]:
    parts = card.parts
    return {
        "template": f"{card.template['name']}@v{card.template['version']}",
        "image_description": parts.image_description,
        "knowledge": parts.knowledge,
        "knowledge_sentences": parts.knowledge_sentences,
        "knowledge_filter": parts.knowledge_filter,
        "max_length": max_length,
    }


def _scores(card: CheckpointCard) -> dict[str, Any] | None:
    report = card.report
    if report is None or not report.history:
        return None
    return {
        "metric": report.metric,
        "best": round(report.best_score, 6),
        "best_epoch": report.best_epoch,
        "epochs": len(report.history),
        "seconds_to_best": round(report.seconds_to_best, 1),
    }


def model_card_metadata(card: CheckpointCard, *, max_length: int | None = None) -> dict[str, Any]:
    """The ``kecpm`` entry of the card's YAML header."""
    data = card.training_data
    return {
        "version": card.kecpm_version,
        "format_version": card.format_version,
        "family": card.family,
        "inputs": _inputs(card, max_length),
        "training_data": data.model_dump(mode="json") if data is not None else None,
        "val_scores": _scores(card),
    }


def _text(card: CheckpointCard, meta: dict[str, Any]) -> str:
    inputs, scores, data = meta["inputs"], meta["val_scores"], card.training_data
    knowledge = "no"
    if inputs["knowledge"]:
        knowledge = (
            "all sentences" if inputs["knowledge_sentences"] is None else f"first {inputs['knowledge_sentences']}"
        )
        if inputs["knowledge_filter"] == "naming_post":
            knowledge += ", of those sharing a word with the post"
    lines = [
        f"# kecpm extractor ({card.family})",
        "",
        "A few-shot joint multimodal entity-relation extraction (JMERE) model trained with kecpm "
        f"{card.kecpm_version}: it reads a post's text, its image description and background knowledge, and "
        "writes quintuples (head entity, head type, tail entity, tail type, relation).",
        "",
        "## Use",
        "",
        "```python",
        "from kecpm.extractor import load_extractor",
        "",
        'model = load_extractor("PATH_OR_HUB_ID")  # this folder, or its Hub id',
        "quintuples = model.predict(posts)  # kecpm.Post records",
        "```",
        "",
        "or `kecpm predict --model PATH_OR_HUB_ID --data posts.json --out predictions.jsonl`.",
        "",
        "## Inputs",
        "",
        f"- input template: `{inputs['template']}`",
        f"- image description: {'yes' if inputs['image_description'] else 'no'}",
        f"- knowledge: {knowledge}",
        f"- at most {inputs['max_length']} input tokens" if inputs["max_length"] else "- input length: the model's",
        f"- labels: {len(ENTITY_TYPES)} entity types ({', '.join(t.value for t in ENTITY_TYPES)}), "
        f"{len(RELATIONS)} relations",
        "",
        "## Training data",
        "",
    ]
    if data is None:
        lines.append("Not recorded.")
    else:
        lines += ["| split | posts | quintuples | SHA-256 of the posts |", "|---|---:|---:|---|"]
        lines += [
            f"| {name} | {s.posts} | {s.quintuples} | `{s.sha256}` |"
            for name, s in (("train", data.train), ("val", data.val))
        ]
        if data.files:
            lines += ["", "| file | role | SHA-256 |", "|---|---|---|"]
            lines += [f"| {f['name']} | {role} | `{f['sha256']}` |" for role, f in data.files.items()]
    lines += ["", "## Validation scores", ""]
    if scores is None:
        lines.append("Not trained with kecpm's `fit` (no validation history).")
    else:
        metric = scores["metric"] or "val score"
        lines += [
            f"Best {metric}: **{scores['best']:.4f}** at epoch {scores['best_epoch']} of {scores['epochs']} "
            f"({scores['seconds_to_best']} s to best); early stopping selected this epoch on val.",
            "",
            "| epoch | loss | val score | seconds |",
            "|---:|---:|---:|---:|",
        ]
        lines += [f"| {e.epoch} | {e.loss:.4f} | {e.val_score:.4f} | {e.seconds:.1f} |" for e in card.report.history]
    if card.train_config is not None:
        lines += [
            "",
            "## Training config",
            "",
            "```json",
            json.dumps(card.train_config.model_dump(mode="json"), indent=2),
            "```",
        ]
    lines += [
        "",
        "## Files",
        "",
        f"kecpm checkpoint format {FORMAT_VERSION}: `config.json` (the checkpoint card: labels, input template, "
        "training config, report and data, the model's own config) and this card at the root, beside the "
        "model's weights and tokenizer.",
        "",
    ]
    return "\n".join(lines)


def write_model_card(directory: Path, card: CheckpointCard, *, base_model: str | None, max_length: int | None) -> Path:
    """Write ``README.md`` into ``directory``; ``base_model`` is the encoder's Hub id, when it has one."""
    from huggingface_hub import ModelCard, ModelCardData

    meta = model_card_metadata(card, max_length=max_length)
    data = ModelCardData(library_name="kecpm", tags=_TAGS, base_model=base_model, kecpm=meta)
    path = directory / MODEL_CARD_FILE
    ModelCard(f"---\n{data.to_yaml()}\n---\n\n{_text(card, meta)}").save(path)
    return path
