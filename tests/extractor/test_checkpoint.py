from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kecpm.extractor import (
    CheckpointError,
    GenerativeExtractor,
    InputParts,
    SpanPairExtractor,
    load_extractor,
    register_family,
)
from kecpm.extractor.checkpoint import CARD_FILE


def _copy(directory: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(directory, tmp_path / "copy"))


def _edit_card(directory: Path, edit) -> None:
    card = json.loads((directory / CARD_FILE).read_text())
    edit(card)
    (directory / CARD_FILE).write_text(json.dumps(card))


def test_the_checkpoint_records_what_was_used(trained_tiny):
    _, directory = trained_tiny
    card = json.loads((directory / "extractor.json").read_text())
    assert card["format_version"] == 1
    assert card["family"] == "span_pair"
    assert card["template"]["name"] == "extract_input"
    assert card["parts"] == InputParts().model_dump()
    assert len(card["relations"]) == 21
    assert card["report"]["best_epoch"] >= 1
    assert load_extractor(directory).schema == trained_tiny[0].schema
    assert list(card["schema"]) == sorted(card["schema"])  # the same card whatever the process's hash seed


def test_bad_model_directories_are_named(trained_tiny, tmp_path):
    _, directory = trained_tiny
    with pytest.raises(CheckpointError, match="no such model directory"):
        load_extractor(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match=r"extractor\.json is missing"):
        load_extractor(tmp_path)
    copy = _copy(directory, tmp_path)
    (copy / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors is missing"):
        load_extractor(copy)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda card: card.update(format_version=99), "format version 99, but this kecpm reads version 1"),
        (lambda card: card["relations"].append("founded_by"), r"unknown: \['founded_by'\]"),
        (lambda card: card.update(family="crf"), r"unknown model family 'crf' \(known: generative, span_pair\)"),
        (lambda card: card.pop("schema"), "card of a 'span_pair' model has no 'schema' entry"),
        (lambda card: card.update(parts={"knowledge_sentences": 0}), r"extractor\.json: not a valid checkpoint card"),
    ],
)
def test_other_versions_labels_and_broken_cards_are_refused(trained_tiny, tmp_path, edit, message):
    _, directory = trained_tiny
    copy = _copy(directory, tmp_path)
    _edit_card(copy, edit)
    with pytest.raises(CheckpointError, match=message):
        load_extractor(copy)


def test_a_family_loads_only_its_own_checkpoints(trained_tiny):
    _, directory = trained_tiny
    with pytest.raises(CheckpointError, match="a 'span_pair' model, not a 'generative' one"):
        GenerativeExtractor.load(directory)


def test_a_registered_family_is_found_by_load_extractor(trained_tiny, tmp_path, synthetic_split):
    from kecpm.extractor import base

    model, directory = trained_tiny

    @register_family
    class Renamed(SpanPairExtractor):
        family = "renamed_span_pair"

    try:
        copy = _copy(directory, tmp_path)
        _edit_card(copy, lambda card: card.update(family="renamed_span_pair"))
        loaded = load_extractor(copy)
        assert type(loaded) is Renamed
        assert loaded.predict(synthetic_split[1][:3]) == model.predict(synthetic_split[1][:3])
    finally:
        del base._FAMILIES["renamed_span_pair"]


# The card of a span-pair checkpoint as kecpm wrote it before extractor/ was split (format version 1),
# for the tiny model of conftest.py; the schema, encoder and tokenizer come from that model.
_CARD_BEFORE_THE_SPLIT = """{
  "format_version": 1,
  "family": "span_pair",
  "entity_types": ["per", "loc", "org", "misc"],
  "relations": ["parent", "siblings", "couple", "neighbor", "peer", "charges", "alumi", "alternate_names",
    "place_of_residence", "place_of_birth", "member_of", "subsidiary", "locate_at", "contain", "present_in",
    "awarded", "race", "religion", "nationality", "part_of", "held_on"],
  "template": {
    "name": "extract_input",
    "version": 1,
    "description": "The extractor's input (shortened here).",
    "messages": [
      {"role": "human", "content": "{text}"},
      {"role": "human", "content": "image: {image_description}"},
      {"role": "human", "content": "knowledge: {knowledge}"}
    ]
  },
  "parts": {"image_description": true, "knowledge": true, "knowledge_sentences": null},
  "train_config": {"epochs": 3, "batch_size": 16, "learning_rate": 0.0001, "head_learning_rate": 0.003,
    "weight_decay": 0.01, "warmup_ratio": 0.1, "max_grad_norm": 1.0, "patience": 6, "seed": 17,
    "eval_batch_size": 64, "threads": null, "return_freed_memory": true},
  "report": {"best_score": 0.25, "best_epoch": 3, "seconds_to_best": 1.5, "seconds": 1.5,
    "history": [{"epoch": 3, "loss": 1.25, "val_score": 0.25, "seconds": 1.5}]},
  "config": {"encoder": "/gone/tiny_bert", "max_length": 96, "max_span_width": 8, "hidden_size": 32,
    "width_embedding": 32, "context_mentions": true, "context_comentions": false, "dropout": 0.2,
    "negative_spans": 4, "span_none_weight": 1.0, "relation_none_weight": 1.0, "entity_threshold": 0.5,
    "relation_threshold": 0.5, "max_entities": 8, "at_least_one": true, "type_constraints": true},
  "schema": "FROM THE MODEL",
  "files": ["model.safetensors", "encoder/config.json", "tokenizer"]
}"""

# The names and shapes of the span-pair network's own weights as that kecpm saved them (the encoder's,
# "encoder.*", are the transformers model's).
_HEAD_WEIGHTS_BEFORE_THE_SPLIT = {
    "distance.weight": [16, 32],
    "mentioned.weight": [2, 32],
    "pair_head.1.bias": [32],
    "pair_head.1.weight": [32, 160],
    "pair_head.4.bias": [22],
    "pair_head.4.weight": [22, 32],
    "pair_project.0.bias": [32],
    "pair_project.0.weight": [32, 160],
    "span_head.0.bias": [32],
    "span_head.0.weight": [32, 160],
    "span_head.3.bias": [5],
    "span_head.3.weight": [5, 32],
    "width.weight": [9, 32],
}


def test_a_checkpoint_written_before_the_split_loads_and_predicts_the_same(trained_tiny, synthetic_split, tmp_path):
    """An old-format folder built by hand (card, weights under their old names, encoder config, tokenizer)."""
    from safetensors.torch import save_file

    model, directory = trained_tiny
    old = tmp_path / "old_checkpoint"
    old.mkdir()
    card = json.loads(_CARD_BEFORE_THE_SPLIT)
    card["schema"] = {relation: [list(pair) for pair in pairs] for relation, pairs in model.schema.items()}
    (old / "extractor.json").write_text(json.dumps(card, indent=2) + "\n")
    state = model.network.state_dict()
    heads = {name: list(tensor.shape) for name, tensor in state.items() if not name.startswith("encoder.")}
    assert heads == _HEAD_WEIGHTS_BEFORE_THE_SPLIT
    save_file({name: tensor.contiguous() for name, tensor in state.items()}, str(old / "model.safetensors"))
    shutil.copytree(directory / "encoder", old / "encoder")
    shutil.copytree(directory / "tokenizer", old / "tokenizer")

    loaded = load_extractor(old)
    assert isinstance(loaded, SpanPairExtractor)
    assert loaded.config == model.config.model_copy(update={"encoder": "/gone/tiny_bert"})
    assert loaded.report is not None and loaded.report.best_epoch == 3
    assert loaded.train_config is not None and loaded.train_config.head_learning_rate == 0.003
    _, val = synthetic_split
    assert loaded.predict(val) == model.predict(val)
