from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kecpm.extractor import InputTooLong, SpanPairConfig, SpanPairExtractor, TrainConfig, load_extractor
from kecpm.extractor.span_pair.encoding import MENTION_SHAPES
from kecpm.predictions import read_predictions, write_predictions
from kecpm.records import Post


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


def test_load_in_another_process_gives_identical_predictions(trained_tiny, synthetic_split, tmp_path):
    model, directory = trained_tiny
    _, val = synthetic_split
    data = tmp_path / "posts_knowledge.json"  # JSON Lines with captions and knowledge
    from kecpm.post_files import write_kecpm

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


def test_a_word_longer_than_a_window_is_a_clear_error(trained_tiny):
    model, _ = trained_tiny
    # 60 CJK characters in one word: 60 subword tokens, over the 48-token window of a 96-token model
    word = "".join(chr(0x4E00 + i) for i in range(60))
    long_post = Post(id="long-one", tokens=["word"] * 100 + [word])
    with pytest.raises(
        InputTooLong, match=r"record 'long-one': word 101 alone needs 60 tokens, over the \d+ of a window"
    ):
        model.predict([long_post])


def test_unfitted_model_says_so():
    with pytest.raises(RuntimeError, match="not trained"):
        SpanPairExtractor().predict([Post(id="x", text="a b")])


async def test_apredict_matches_predict(trained_tiny, synthetic_split):
    model, _ = trained_tiny
    _, val = synthetic_split
    assert await model.apredict(val[:5]) == model.predict(val[:5])


def test_models_saved_before_context_mentions_load_without_them(tiny_encoder, synthetic_split, scorer, tmp_path):
    train, val = synthetic_split
    old = {"context_mentions": False, "context_comentions": False, "word_shapes": False, "text_order_relations": ()}
    config = SpanPairConfig(encoder=str(tiny_encoder), hidden_size=32, max_length=96, **old)
    model = SpanPairExtractor(config)
    model.fit(train[:8], val[:4], scorer=scorer, config=TrainConfig(epochs=1), progress=False)
    directory = model.save(tmp_path / "old")
    card = json.loads((directory / "config.json").read_text())
    for field in ("context_mentions", "context_comentions", "word_shapes", "text_order_relations"):
        del card["config"][field]  # as an older kecpm wrote it
    (directory / "config.json").write_text(json.dumps(card))
    loaded = load_extractor(directory)
    assert loaded.config.context_mentions is loaded.config.context_comentions is loaded.config.word_shapes is False
    assert loaded.config.text_order_relations == ()
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
    assert fast.inputs is not model.inputs and fast.tokenizer is model.tokenizer
    with pytest.raises(RuntimeError, match="inference-only copy"):
        fast.save(tmp_path / "int8")
    with pytest.raises(RuntimeError, match="inference-only copy"):
        fast.fit(train, val, scorer=scorer)
    assert not (tmp_path / "int8").exists()


def test_a_model_with_word_shapes_trains_saves_and_loads(tiny_encoder, synthetic_split, scorer, tmp_path):
    train, val = synthetic_split
    config = SpanPairConfig(encoder=str(tiny_encoder), hidden_size=32, max_length=96, word_shapes=True)
    model = SpanPairExtractor(config)
    model.fit(train[:8], val[:4], scorer=scorer, config=TrainConfig(epochs=1), progress=False)
    assert model.network.state_dict()["shape.weight"].shape[1] == config.width_embedding
    loaded = load_extractor(model.save(tmp_path / "shapes"))
    assert loaded.config.word_shapes is True
    assert loaded.predict(val) == model.predict(val)


def test_a_model_with_comentions_trains_saves_and_loads(tiny_encoder, synthetic_split, scorer, tmp_path):
    train, val = synthetic_split
    config = SpanPairConfig(encoder=str(tiny_encoder), hidden_size=32, max_length=96, context_comentions=True)
    model = SpanPairExtractor(config)
    model.fit(train[:8], val[:4], scorer=scorer, config=TrainConfig(epochs=1), progress=False)
    assert "comentioned.weight" in model.network.state_dict()
    assert any(e.sentence_sets and any(e.sentence_sets) for e in model._examples(val[:4]))
    loaded = load_extractor(model.save(tmp_path / "comentions"))
    assert loaded.config.context_comentions is True
    assert loaded.predict(val) == model.predict(val)


def test_a_model_with_mention_shapes_trains_saves_and_loads(tiny_encoder, synthetic_split, scorer, tmp_path):
    train, val = synthetic_split
    config = SpanPairConfig(encoder=str(tiny_encoder), hidden_size=32, max_length=96, mention_shapes=True)
    model = SpanPairExtractor(config)
    model.fit(train[:8], val[:4], scorer=scorer, config=TrainConfig(epochs=1), progress=False)
    assert model.network.state_dict()["mention_shape.weight"].shape == (len(MENTION_SHAPES), config.width_embedding)
    assert any(any(e.mention_shapes) for e in model._examples(val[:4]))  # the synthetic knowledge names spans
    loaded = load_extractor(model.save(tmp_path / "mention_shapes"))
    assert loaded.config.mention_shapes is True
    assert loaded.predict(val) == model.predict(val)


def test_tuned_thresholds_are_the_grid_s_best_by_full_prediction(trained_tiny, synthetic_split, scorer):
    model, _ = trained_tiny
    _, val = synthetic_split
    before = model.config
    grid = (0.2, 0.5, 0.8)
    try:
        # the oracle: a full prediction per grid point
        brute = {}
        for e in grid:
            for r in grid:
                model.config = before.model_copy(update={"entity_threshold": e, "relation_threshold": r})
                brute[e, r] = scorer(val, model.predict(val))
        model.config = before
        choice = model.tune_thresholds(val, scorer=scorer, entity_grid=grid, relation_grid=grid)
        assert choice.score == max(brute.values())
        assert brute[choice.entity_threshold, choice.relation_threshold] == choice.score
        assert choice.untuned_score == brute[0.5, 0.5]
        assert (model.config.entity_threshold, model.config.relation_threshold) == (
            choice.entity_threshold,
            choice.relation_threshold,
        )
        assert scorer(val, model.predict(val)) == choice.score
        with pytest.raises(ValueError, match="at least one"):
            model.tune_thresholds(val, scorer=scorer, entity_grid=())
    finally:
        model.config = before


def test_fit_can_choose_thresholds_on_val_and_the_checkpoint_keeps_them(tiny_encoder, synthetic_split, tmp_path):
    train, val = synthetic_split
    config = SpanPairConfig(encoder=str(tiny_encoder), hidden_size=32, max_length=96)
    model = SpanPairExtractor(config)

    def prefers_few(gold, predictions):  # a scorer that rewards high thresholds: fewer quintuples
        return -sum(len(p) for p in predictions)

    report = model.fit(
        train[:8], val[:6], scorer=prefers_few, config=TrainConfig(epochs=1, tune_thresholds=True), progress=False
    )
    chosen = (model.config.entity_threshold, model.config.relation_threshold)
    assert report.decoding == {"entity_threshold": chosen[0], "relation_threshold": chosen[1]}
    tuned = prefers_few(val[:6], model.predict(val[:6]))
    model.config = config.model_copy(update={"encoder": config.encoder})  # the untuned 0.5 / 0.5
    assert tuned >= prefers_few(val[:6], model.predict(val[:6]))
    assert SpanPairExtractor(config).config.entity_threshold == 0.5  # a fresh model is untouched
    model.config = model.config.model_copy(update=report.decoding)
    loaded = load_extractor(model.save(tmp_path / "tuned"))
    assert (loaded.config.entity_threshold, loaded.config.relation_threshold) == chosen
    assert loaded.report.decoding == report.decoding


def test_knowledge_dropout_trains_on_both_readings_of_a_post(tiny_encoder, synthetic_split, scorer):
    train, val = synthetic_split
    config = SpanPairConfig(encoder=str(tiny_encoder), hidden_size=32, max_length=96, knowledge_dropout=0.5)
    model = SpanPairExtractor(config)
    model.fit(train[:8], val[:4], scorer=scorer, config=TrainConfig(epochs=1, batch_size=2), progress=False)
    examples = model._examples(train[:8])
    for full in examples:
        bare = full.without_knowledge
        assert bare is not None and len(bare.ids) < len(full.ids)
        assert (bare.spans, bare.span_labels, bare.pairs) == (full.spans, full.span_labels, full.pairs)
    no_knowledge = [p.model_copy(update={"knowledge": []}) for p in train[:2]]
    assert all(e.without_knowledge is None for e in model._examples(no_knowledge))
    # the bare second reading is not counted in the input-assembly figures that training logs
    long_one = train[0].model_copy(update={"tokens": [*train[0].tokens, *["word"] * 120]})  # read in windows
    model._log_stats = lambda: None  # keep the counts to compare them
    model.assembler.stats.clear()
    model._examples([long_one, *train[1:8]])
    with_bare = model.assembler.stats.copy()
    model.assembler.stats.clear()
    model.config = config.model_copy(update={"knowledge_dropout": 0.0})
    model._examples([long_one, *train[1:8]])
    assert with_bare["windows"] and with_bare == model.assembler.stats
    model.config = config
    del model._log_stats

    spied, batched = model.inputs.batch, []

    def spy(chosen):
        batched.extend(chosen)
        return spied(chosen)

    model.inputs.batch = spy
    for _ in range(4):
        model._loss(examples)
    read = {id(e) for e in batched}
    assert any(id(e) in read for e in examples)  # some posts kept their knowledge
    assert any(id(e.without_knowledge) in read for e in examples)  # and some were read without it

    again = SpanPairExtractor(config)
    again.fit(train[:8], val[:4], scorer=scorer, config=TrainConfig(epochs=1, batch_size=2), progress=False)
    assert again.predict(val) == model.predict(val)  # the draws follow fit's seed


def test_a_knowledge_gate_learns_and_turns_down_its_sentences(tiny_encoder, synthetic_split, scorer, tmp_path):
    import torch

    train, val = synthetic_split
    config = SpanPairConfig(encoder=str(tiny_encoder), hidden_size=32, max_length=96, knowledge_gate=True)
    model = SpanPairExtractor(config)
    model.fit(train[:8], val[:4], scorer=scorer, config=TrainConfig(epochs=1), progress=False)
    assert model.network.gate.weight.abs().sum() > 0  # it learned from the loss (it starts at 0)
    model.network.eval()
    examples = model._examples(val[:3])
    t = model.inputs.batch(examples)
    knowledge = torch.zeros(t["ids"].shape, dtype=torch.bool)
    for b, start, end in t["gated"].tolist():
        assert start >= examples[b].knowledge_start
        knowledge[b, start:end] = True
    assert knowledge.any()
    with torch.no_grad():
        gate = model.network.token_gate(t)
        assert (gate[~knowledge] == 0).all() and (gate[knowledge] < 0).all()
        # a gate shut hard reads as if the knowledge sentences were masked out of the attention
        model.network.gate.bias.fill_(-1e4)
        shut = model.network.token_gate(t)
        hidden = model.network.encode(t["ids"], t["mask"], t["types"], shut)
        masked = model.network.encode(t["ids"], t["mask"] * ~knowledge, t["types"])
        assert torch.allclose(hidden[~knowledge], masked[~knowledge], atol=1e-4)
        # and the context mentions inside them count for nothing
        vectors = model.network.spans(hidden, t, shut)
        size = model.network.encoder.config.hidden_size
        mention = vectors[:, 2 * size + config.width_embedding : 3 * size + config.width_embedding]
        inside = knowledge[t["batch"], t["mention_start"]] & (t["mention_end"] > t["mention_start"])
        assert inside.any() and mention[inside].abs().max() < 1e-6
        assert mention[~inside & (t["mention_end"] > t["mention_start"])].abs().sum() > 0
    model = SpanPairExtractor(config)
    model.fit(train[:8], val[:4], scorer=scorer, config=TrainConfig(epochs=1), progress=False)
    loaded = load_extractor(model.save(tmp_path / "gated"))
    assert loaded.config.knowledge_gate is True
    assert torch.equal(loaded.network.gate.weight, model.network.gate.weight)
    assert loaded.predict(val) == model.predict(val)


def test_knowledge_isolation_keeps_the_post_s_vectors_those_of_the_input_without_knowledge(
    tiny_encoder, synthetic_split, scorer, tmp_path
):
    import torch

    train, val = synthetic_split
    config = SpanPairConfig(encoder=str(tiny_encoder), hidden_size=32, max_length=96, knowledge_isolation=True)
    model = SpanPairExtractor(config)
    model.fit(train[:8], val[:4], scorer=scorer, config=TrainConfig(epochs=1), progress=False)
    model.network.eval()
    bare_posts = [p.model_copy(update={"knowledge": []}) for p in val[:3]]
    full, bare = model._examples(val[:3]), model._examples(bare_posts)
    # the second post without knowledge: one batch holds isolated and plain examples
    examples = [full[0], bare[1], full[2]]
    with torch.no_grad():
        t = model.inputs.batch(examples)
        hidden = model.network.encode(t["ids"], t["mask"], t["types"])
        for b, e in enumerate(examples):
            alone = model.inputs.batch([bare[b]])
            reference = model.network.encode(alone["ids"], alone["mask"], alone["types"])[0]
            before = len(bare[b].ids) if e.knowledge_start is None else e.knowledge_start
            assert before == len(bare[b].ids) < len(full[b].ids) or e is bare[b]
            assert torch.allclose(hidden[b, :before], reference[:before], atol=1e-5)
        t = model.inputs.batch([full[0]])
        mixed = model.network.encode(t["ids"], t["ids"].new_ones(t["ids"].shape), t["types"])  # no isolation
        assert not torch.allclose(mixed[0, : full[0].knowledge_start], hidden[0, : full[0].knowledge_start], atol=1e-3)
    loaded = load_extractor(model.save(tmp_path / "isolated"))
    assert loaded.config.knowledge_isolation is True
    assert loaded.predict(val) == model.predict(val)
