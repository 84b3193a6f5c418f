from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kecpm.extractor import (
    CheckpointError,
    InputParts,
    InputTooLong,
    SpanPairConfig,
    SpanPairExtractor,
    TrainConfig,
    load_extractor,
)
from kecpm.predictions import read_predictions, write_predictions
from kecpm.records import Post


def _surfaces(predictions):
    return [[q.surface() for q in quintuples] for quintuples in predictions]


def test_predictions_are_well_formed(trained_tiny, synthetic_split):
    model, _ = trained_tiny
    _, val = synthetic_split
    predictions = model.predict(val, batch_size=4)
    assert len(predictions) == len(val)
    for post, quintuples in zip(val, predictions, strict=True):
        assert quintuples, "every post gets at least its best pair"
        for q in quintuples:
            assert q.head.span != q.tail.span
            assert " ".join(post.tokens[q.head.span[0] : q.head.span[1]]) == q.head.name
            # the types are one of the type pairs the relation had in training
            assert [q.head.type.value, q.tail.type.value] in [list(p) for p in model.schema[q.relation.value]]
    assert model.predict(val, batch_size=64) == predictions  # batching does not change the result


def test_same_seed_same_training(tiny_encoder, synthetic_split, scorer):
    train, val = synthetic_split
    runs = []
    for _ in range(2):
        model = SpanPairExtractor(SpanPairConfig(encoder=str(tiny_encoder), hidden_size=32, max_length=96))
        report = model.fit(train, val, scorer=scorer, config=TrainConfig(epochs=2, seed=5), progress=False)
        runs.append(([round(e.loss, 6) for e in report.history], [e.val_score for e in report.history]))
    assert runs[0] == runs[1]


def test_early_stopping_keeps_the_best_epoch(tiny_encoder, synthetic_split):
    train, val = synthetic_split
    scores = iter([0.2, 0.5, 0.1, 0.3, 0.4, 0.9])
    model = SpanPairExtractor(SpanPairConfig(encoder=str(tiny_encoder), hidden_size=32, max_length=96))
    report = model.fit(
        train[:8], val[:4], scorer=lambda g, p: next(scores), config=TrainConfig(epochs=6, patience=2), progress=False
    )
    assert [e.val_score for e in report.history] == [0.2, 0.5, 0.1, 0.3]
    assert (report.best_epoch, report.best_score) == (2, 0.5)


def test_load_in_another_process_gives_identical_predictions(trained_tiny, synthetic_split, tmp_path):
    model, directory = trained_tiny
    _, val = synthetic_split
    data = tmp_path / "posts_knowledge.json"  # JSON Lines with captions and knowledge
    from kecpm.jmere import write_kecpm

    write_kecpm(val, data)
    here = tmp_path / "here.jsonl"
    write_predictions(here, model.predict(val), img_ids=[p.img_id for p in val])
    there = tmp_path / "there.jsonl"
    subprocess.run(
        [sys.executable, "-m", "kecpm", "predict", "--model", str(directory), "--data", str(data), "--out", str(there)],
        check=True,
        capture_output=True,
    )
    assert here.read_text() == there.read_text()
    assert len(read_predictions(there)) == len(val)


def test_the_checkpoint_records_what_was_used(trained_tiny):
    _, directory = trained_tiny
    manifest = json.loads((directory / "extractor.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["family"] == "span_pair"
    assert manifest["template"]["name"] == "extract_input"
    assert manifest["parts"] == InputParts().model_dump()
    assert len(manifest["relations"]) == 21
    assert manifest["report"]["best_epoch"] >= 1
    assert load_extractor(directory).schema == trained_tiny[0].schema


def _copy(directory: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(directory, tmp_path / "copy"))


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
    ("change", "message"),
    [
        ({"format_version": 99}, "format version 99, but this kecpm reads version 1"),
        ({"relations_extra": ["founded_by"]}, r"unknown: \['founded_by'\]"),
        ({"family": "crf"}, "unknown model family 'crf'"),
    ],
)
def test_other_versions_and_labels_are_refused(trained_tiny, tmp_path, change, message):
    _, directory = trained_tiny
    copy = _copy(directory, tmp_path)
    manifest = json.loads((copy / "extractor.json").read_text())
    if "relations_extra" in change:
        manifest["relations"] = manifest["relations"] + change["relations_extra"]
    else:
        manifest.update(change)
    (copy / "extractor.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=message):
        load_extractor(copy)


def test_a_post_over_the_limit_is_a_clear_error(trained_tiny):
    model, _ = trained_tiny
    long_post = Post(id="long-one", text=" ".join(["word"] * 200))
    with pytest.raises(InputTooLong, match="record 'long-one'"):
        model.predict([long_post])


def test_unfitted_model_says_so():
    with pytest.raises(RuntimeError, match="not trained"):
        SpanPairExtractor().predict([Post(id="x", text="a b")])


async def test_apredict_matches_predict(trained_tiny, synthetic_split):
    model, _ = trained_tiny
    _, val = synthetic_split
    assert await model.apredict(val[:5]) == model.predict(val[:5])


def test_a_span_reads_its_first_mention_in_the_context(trained_tiny):
    model, _ = trained_tiny
    post = Post(
        id="m1",
        text="Alva Brenner met the mayor of Oakline",
        image_descriptions=["two people on a stage"],
        knowledge=["ALVA BRENNER is a singer.", "Oakline's mayor is elected.", "Mayoral races: often close."],
    )
    encoded = model._encode(post, with_labels=False)
    tokens = model.tokenizer.convert_ids_to_tokens(encoded.ids)
    mentions = {" ".join(post.tokens[i:j]): m for (i, j), m in zip(encoded.spans, encoded.mentions, strict=True)}
    knowledge_start = tokens.index("knowledge")

    def words(name: str) -> str:
        start, end = mentions[name]
        return model.tokenizer.convert_tokens_to_string(tokens[start:end])

    assert words("Alva Brenner") == "alva brenner"  # case-blind, in the knowledge, not in the text
    assert mentions["Alva Brenner"][0] > knowledge_start
    assert words("Oakline") == "oakline"  # a whole word before an apostrophe
    assert mentions["mayor"][0] > mentions["Oakline"][0]  # "Mayoral" is not "mayor"; the first whole word is
    assert mentions["met"] == (0, 0)  # not mentioned
    assert mentions["Brenner met"] == (0, 0)
    # with context_comentions, pairs read the first sentence that mentions both spans
    comentions = SpanPairExtractor(SpanPairConfig(context_comentions=True))
    comentions.tokenizer, comentions._use_types = model.tokenizer, True
    encoded = comentions._encode(post, with_labels=False)
    assert model._encode(post, with_labels=False).sentence_sets == []  # off by default
    sentences = [model.tokenizer.convert_tokens_to_string(tokens[a:b]) for a, b in encoded.sentences]
    assert sentences == ["image : two people on a stage", "knowledge : alva brenner is a singer.",
                         "oakline ' s mayor is elected.", "mayoral races : often close."]  # fmt: skip
    span = {" ".join(post.tokens[i:j]): k for k, (i, j) in enumerate(encoded.spans)}
    from kecpm.extractor.span_model import _shared_sentence

    assert _shared_sentence(encoded, span["mayor"], span["Oakline"]) == encoded.sentences[2]
    assert _shared_sentence(encoded, span["Oakline"], span["mayor"]) == encoded.sentences[2]
    assert _shared_sentence(encoded, span["Alva Brenner"], span["Oakline"]) == (0, 0)
    # without context nothing is mentioned, and a model without the feature encodes no mentions
    bare = post.model_copy(update={"image_description": "", "knowledge": []})
    assert set(model._encode(bare, with_labels=False).mentions) == {(0, 0)}
    plain = SpanPairExtractor(SpanPairConfig(context_mentions=False, context_comentions=False))
    plain.tokenizer = model.tokenizer
    plain._use_types = True
    assert plain._encode(post, with_labels=False).mentions == []
    assert plain._encode(post, with_labels=False).sentence_sets == []


def test_models_saved_before_context_mentions_load_without_them(tiny_encoder, synthetic_split, scorer, tmp_path):
    train, val = synthetic_split
    config = SpanPairConfig(
        encoder=str(tiny_encoder), hidden_size=32, max_length=96, context_mentions=False, context_comentions=False
    )
    model = SpanPairExtractor(config)
    model.fit(train[:8], val[:4], scorer=scorer, config=TrainConfig(epochs=1), progress=False)
    directory = model.save(tmp_path / "old")
    manifest = json.loads((directory / "extractor.json").read_text())
    del manifest["config"]["context_mentions"], manifest["config"]["context_comentions"]  # as an older kecpm wrote it
    (directory / "extractor.json").write_text(json.dumps(manifest))
    loaded = load_extractor(directory)
    assert loaded.config.context_mentions is loaded.config.context_comentions is False
    assert loaded.predict(val) == model.predict(val)


def test_int8_copy_predicts_and_refuses_training_and_saving(trained_tiny, synthetic_split, scorer, tmp_path):
    model, _ = trained_tiny
    train, val = synthetic_split
    fast = model.quantized()

    def int8_layers(extractor: SpanPairExtractor) -> int:
        return sum("quantized.dynamic" in type(m).__module__ for m in extractor.network.encoder.modules())

    assert int8_layers(fast) == 2 * 6 + 1  # 6 linear layers per block and the pooler's
    assert int8_layers(model) == 0  # the original stays in float
    predictions = fast.predict(val)
    assert len(predictions) == len(val) and all(predictions)
    with pytest.raises(RuntimeError, match="inference-only copy"):
        fast.save(tmp_path / "int8")
    with pytest.raises(RuntimeError, match="inference-only copy"):
        fast.fit(train, val, scorer=scorer)
    assert not (tmp_path / "int8").exists()


def test_a_model_with_comentions_trains_saves_and_loads(tiny_encoder, synthetic_split, scorer, tmp_path):
    train, val = synthetic_split
    config = SpanPairConfig(encoder=str(tiny_encoder), hidden_size=32, max_length=96, context_comentions=True)
    model = SpanPairExtractor(config)
    model.fit(train[:8], val[:4], scorer=scorer, config=TrainConfig(epochs=1), progress=False)
    assert any(e.sentence_sets and any(e.sentence_sets) for e in model._examples(val[:4]))
    loaded = load_extractor(model.save(tmp_path / "comentions"))
    assert loaded.config.context_comentions is True
    assert loaded.predict(val) == model.predict(val)


def test_training_returns_freed_memory_to_the_os_on_glibc():
    import platform

    from kecpm.extractor.base import return_freed_memory

    glibc = platform.libc_ver()[0] == "glibc"
    assert return_freed_memory() is glibc
    assert return_freed_memory(False) is glibc  # back to a threshold that keeps prediction fast
