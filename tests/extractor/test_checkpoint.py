"""The checkpoint format: save_pretrained / from_pretrained (folder or Hub id), the model card, the
format-1 folders of earlier kecpm releases, and one plain sentence for every folder that cannot load."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import kecpm
from kecpm.extractor import (
    CheckpointError,
    Extractor,
    GenerativeExtractor,
    InputParts,
    SpanPairConfig,
    SpanPairExtractor,
    TrainConfig,
    load_extractor,
    register_family,
)
from kecpm.extractor.checkpoint import CONFIG_FILE, LEGACY_CARD_FILE, DataSummary


def _copy(directory: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(directory, tmp_path / "copy"))


def _edit_card(directory: Path, edit, name: str = CONFIG_FILE) -> None:
    card = json.loads((directory / name).read_text())
    edit(card)
    (directory / name).write_text(json.dumps(card))


def _surface(predictions) -> list[list[tuple]]:
    return [[q.surface() for q in quintuples] for quintuples in predictions]


def test_the_folder_is_in_the_hugging_face_layout_and_its_card_records_what_was_used(trained_tiny, synthetic_split):
    model, directory = trained_tiny
    train, val = synthetic_split
    assert {p.name for p in directory.iterdir()} >= {"config.json", "README.md", "model.safetensors", "tokenizer.json"}
    assert not (directory / LEGACY_CARD_FILE).exists()
    card = json.loads((directory / CONFIG_FILE).read_text())
    assert card["library"] == "kecpm"
    assert card["kecpm_version"] == kecpm.__version__
    assert card["format_version"] == 2
    assert card["family"] == "span_pair"
    assert card["template"]["name"] == "extract_input"
    assert card["parts"] == InputParts().model_dump()
    assert len(card["relations"]) == 21
    assert card["report"]["best_epoch"] >= 1
    assert card["report"]["metric"] == "micro_f1"  # the scorer's __name__
    assert card["training_data"]["train"] == DataSummary.of(train).model_dump()
    assert card["training_data"]["val"]["posts"] == len(val)
    assert card["encoder_config"]["model_type"] == "bert"
    assert card["encoder_config"]["hidden_size"] == 32
    assert load_extractor(directory).schema == model.schema
    assert list(card["schema"]) == sorted(card["schema"])  # the same card whatever the process's hash seed


def test_the_model_card_gives_data_hashes_inputs_val_scores_and_the_kecpm_version(trained_tiny, synthetic_split):
    from huggingface_hub import ModelCard

    model, directory = trained_tiny
    train, val = synthetic_split
    card = ModelCard.load(directory / "README.md")
    assert card.data.library_name == "kecpm"
    assert "jmere" in card.data.tags
    assert card.data.base_model is None  # a local encoder folder is no Hub id
    meta = card.data.kecpm
    assert meta["version"] == kecpm.__version__
    assert meta["family"] == "span_pair"
    assert meta["inputs"] == {
        "template": "extract_input@v1",
        "image_description": True,
        "knowledge": True,
        "knowledge_sentences": None,
        "knowledge_filter": "all",
        "max_length": 96,
    }
    assert meta["training_data"]["train"]["sha256"] == DataSummary.of(train).sha256
    assert meta["training_data"]["val"]["sha256"] == DataSummary.of(val).sha256
    assert meta["val_scores"]["best"] == pytest.approx(model.report.best_score, abs=1e-6)
    assert meta["val_scores"]["best_epoch"] == model.report.best_epoch
    text = card.text
    for heading in ("## Use", "## Inputs", "## Training data", "## Validation scores", "## Training config"):
        assert heading in text
    assert DataSummary.of(train).sha256 in text
    assert f"kecpm {kecpm.__version__}" in text
    assert f"at epoch {model.report.best_epoch} of" in text


def test_the_model_card_names_the_default_encoder_as_base_model_and_the_data_files(tmp_path, split_dir):
    """Saved without training (no report), on the default encoder, with the files it was given."""
    from huggingface_hub import ModelCard

    from kecpm.extractor.checkpoint import TrainingData
    from kecpm.post_files import load_split

    model = SpanPairExtractor()
    model._prepare(load_split(split_dir, "train"))
    model.training_data = TrainingData.of([], [], {"train": split_dir / "train.json"})
    card = ModelCard.load(model.save_pretrained(tmp_path / "untrained") / "README.md")
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    from kecpm.hashing import file_sha256

    assert card.data.kecpm["training_data"]["files"] == {
        "train": {"name": "train.json", "sha256": file_sha256(split_dir / "train.json")}
    }
    assert str(split_dir) not in card.content  # file names only: a published card shows no local folders
    assert "Not trained with kecpm's `fit`" in card.text


_PREDICT_IN_A_FRESH_PROCESS = """
import json, sys
from kecpm.extractor import SpanPairExtractor, load_extractor
from kecpm.records import Post

posts = [Post.model_validate(p) for p in json.load(open(sys.argv[1]))]
out = {}
for name in sys.argv[2:]:
    model = SpanPairExtractor.from_pretrained(name) if name.startswith("/") else load_extractor(name)
    out[name] = [[list(q.surface()) for q in quintuples] for quintuples in model.predict(posts)]
print(json.dumps(out))
"""


def _hub_cache(tmp_path: Path, directory: Path, repo_id: str) -> Path:
    """A Hugging Face cache holding ``directory`` as the main revision of ``repo_id``, laid out as
    snapshot_download leaves it."""
    cache = tmp_path / "hf_cache"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(directory, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return cache


def test_from_pretrained_in_another_process_predicts_identically_from_the_folder_and_a_cached_hub_id(
    trained_tiny, synthetic_split, tmp_path
):
    model, directory = trained_tiny
    _, val = synthetic_split
    posts = tmp_path / "val_posts.json"
    posts.write_text(json.dumps([p.model_dump(mode="json") for p in val]))
    cache = _hub_cache(tmp_path, directory, "kecpm-tests/tiny-span-pair")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HF_")},
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(cache),
        "PYTHONHASHSEED": "12345",  # another hash seed than this process's
    }
    result = subprocess.run(
        [sys.executable, "-c", _PREDICT_IN_A_FRESH_PROCESS, str(posts), str(directory), "kecpm-tests/tiny-span-pair"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    expected = [[list(q) for q in row] for row in _surface(model.predict(val))]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found[str(directory)] == expected
    assert found["kecpm-tests/tiny-span-pair"] == expected
    assert any(expected)  # the comparison is not between empty predictions


def test_a_hub_id_offline_and_not_cached_is_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as error:
        load_extractor("kecpm-tests/not-cached-anywhere")
    message = str(error.value)
    assert message.startswith("kecpm-tests/not-cached-anywhere is neither a local folder nor a cached Hub model")
    assert "HF_HUB_OFFLINE=1" in message and "--local-dir DIR" in message
    assert "\n" not in message


def test_a_missing_folder_under_an_existing_one_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    from kecpm.extractor.hub import looks_like_hub_id

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert not looks_like_hub_id("runs/model")
    assert looks_like_hub_id("my-org/kecpm-span-pair")
    assert not looks_like_hub_id("../model") and not looks_like_hub_id("/abs/model")
    with pytest.raises(CheckpointError, match=r"^runs/model: no such model directory$"):
        load_extractor("runs/model")


def test_bad_model_directories_are_named(trained_tiny, tiny_encoder, tmp_path):
    _, directory = trained_tiny
    with pytest.raises(CheckpointError, match="no such model directory"):
        load_extractor(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"is not a kecpm extractor folder \(it has no config\.json\)"):
        load_extractor(empty)
    with pytest.raises(CheckpointError) as error:
        load_extractor(tiny_encoder)
    assert str(error.value) == (
        f"{tiny_encoder} is a Hugging Face 'bert' model folder, not a kecpm extractor: train an extractor on it "
        f"(`kecpm train --checkpoint {tiny_encoder}`) or pass a folder written by `kecpm train` or `save_pretrained`"
    )
    copy = _copy(directory, tmp_path)
    (copy / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors is missing"):
        load_extractor(copy)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda card: card.update(format_version=99),
            r"was written by a newer kecpm \(checkpoint format 99, this kecpm .* reads formats 1 to 2\): upgrade",
        ),
        (
            lambda card: card.update(format_version=1),
            r"holds a model in an older or unknown kecpm format \(config\.json says format version 1\)",
        ),
        (lambda card: card["relations"].append("founded_by"), r"unknown: \['founded_by'\]"),
        (lambda card: card.update(family="crf"), r"unknown model family 'crf' \(known: generative, span_pair\)"),
        (lambda card: card.pop("schema"), "card of a 'span_pair' model has no 'schema' entry"),
        (lambda card: card.update(parts={"knowledge_sentences": 0}), r"config\.json: not a valid checkpoint card"),
    ],
)
def test_other_versions_labels_and_broken_cards_are_refused(trained_tiny, tmp_path, edit, message):
    _, directory = trained_tiny
    copy = _copy(directory, tmp_path)
    _edit_card(copy, edit)
    with pytest.raises(CheckpointError, match=message):
        load_extractor(copy)


@pytest.mark.parametrize("version", [0, None, 2, "1"])
def test_a_folder_from_an_older_or_unknown_kecpm_gets_one_plain_sentence(tmp_path, version):
    folder = tmp_path / "old_model"
    folder.mkdir()
    card = {"family": "span_pair", "weights": "model.pt"}
    if version is not None:
        card["format_version"] = version
    (folder / LEGACY_CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(CheckpointError) as error:
        load_extractor(folder)
    assert str(error.value) == (
        f"{folder} holds a model in an older or unknown kecpm format (extractor.json says format version "
        f"{version!r}) that kecpm {kecpm.__version__} cannot read: retrain it with `kecpm train`, or load it with "
        "the kecpm version that wrote it"
    )


def test_a_family_loads_only_its_own_checkpoints(trained_tiny):
    _, directory = trained_tiny
    with pytest.raises(CheckpointError, match="a 'span_pair' model, not a 'generative' one"):
        GenerativeExtractor.from_pretrained(directory)
    assert isinstance(Extractor.from_pretrained(directory), SpanPairExtractor)
    assert type(SpanPairExtractor.load(directory)) is SpanPairExtractor  # the name earlier kecpm releases used


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


def _format_1_folder(model: SpanPairExtractor, tmp_path: Path) -> Path:
    """A format-1 folder (kecpm 0.1.0 before save_pretrained) built by hand: the card extractor.json, the
    weights under the names of that time, the encoder config in encoder/, the tokenizer in tokenizer/."""
    from safetensors.torch import save_file

    old = tmp_path / "old_checkpoint"
    old.mkdir()
    card = json.loads(_CARD_BEFORE_THE_SPLIT)
    card["schema"] = {relation: [list(pair) for pair in pairs] for relation, pairs in model.schema.items()}
    (old / "extractor.json").write_text(json.dumps(card, indent=2) + "\n")
    state = model.network.state_dict()
    heads = {name: list(tensor.shape) for name, tensor in state.items() if not name.startswith("encoder.")}
    assert heads == _HEAD_WEIGHTS_BEFORE_THE_SPLIT
    save_file({name: tensor.contiguous() for name, tensor in state.items()}, str(old / "model.safetensors"))
    model.network.encoder.config.save_pretrained(old / "encoder")
    model.tokenizer.save_pretrained(old / "tokenizer")
    return old


@pytest.fixture(scope="module")
def era_model(tiny_encoder, synthetic_split, scorer) -> SpanPairExtractor:
    """A model with the options of format 1's time: no word shapes, relations kept in the model's direction."""
    train, val = synthetic_split
    config = SpanPairConfig(
        encoder=str(tiny_encoder), hidden_size=32, max_length=96, word_shapes=False, text_order_relations=()
    )
    model = SpanPairExtractor(config)
    model.fit(train, val, scorer=scorer, config=TrainConfig(epochs=2, head_learning_rate=3e-3), progress=False)
    return model


def test_a_checkpoint_of_format_1_loads_and_predicts_the_same(era_model, synthetic_split, tmp_path):
    model = era_model
    old = _format_1_folder(model, tmp_path)
    loaded = load_extractor(old)
    assert isinstance(loaded, SpanPairExtractor)
    assert loaded.config == model.config.model_copy(update={"encoder": "/gone/tiny_bert"})
    assert loaded.report is not None and loaded.report.best_epoch == 3
    assert loaded.train_config is not None and loaded.train_config.head_learning_rate == 0.003
    _, val = synthetic_split
    assert loaded.predict(val) == model.predict(val)


def test_a_format_1_model_saved_again_is_in_format_2_and_predicts_the_same(era_model, synthetic_split, tmp_path):
    model = era_model
    _, val = synthetic_split
    old = _format_1_folder(model, tmp_path)
    load_extractor(old).save_pretrained(old)  # in place: the format-1 card goes, config.json comes
    assert not (old / LEGACY_CARD_FILE).exists()
    card = json.loads((old / CONFIG_FILE).read_text())
    assert card["format_version"] == 2 and card["report"]["best_epoch"] == 3
    assert load_extractor(old).predict(val) == model.predict(val)


def test_posts_with_other_knowledge_hash_differently(synthetic_split):
    train, _ = synthetic_split
    other = [train[0].model_copy(update={"knowledge": ["Another fact."]}), *train[1:]]
    assert DataSummary.of(other).sha256 != DataSummary.of(train).sha256
    assert DataSummary.of(list(train)).sha256 == DataSummary.of(train).sha256
