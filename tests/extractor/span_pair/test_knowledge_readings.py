"""knowledge_free_weight: one network reading each post with and without its knowledge, averaged."""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from kecpm.extractor import InputParts, SpanPairConfig, SpanPairEnsemble, SpanPairExtractor
from kecpm.extractor.span_pair.model import decode_scored, knowledge_readings, score_posts


def weighted(model: SpanPairExtractor, weight: float) -> SpanPairExtractor:
    """A copy of ``model`` (same network) whose config sets ``knowledge_free_weight``."""
    other = copy.copy(model)
    other.config = model.config.model_copy(update={"knowledge_free_weight": weight})
    return other


def entity_scores(model: SpanPairExtractor, posts) -> list[list[float]]:
    return [unit[3] for unit in model._score(posts, model.config, batch_size=8, progress=False)]


def bare(posts):
    return [p.model_copy(update={"knowledge": []}) for p in posts]


def test_the_weight_is_checked():
    assert SpanPairConfig().knowledge_free_weight == 0.0
    for wrong in (-0.1, 1.5):
        with pytest.raises(ValidationError):
            SpanPairConfig(knowledge_free_weight=wrong)


def test_without_knowledge_shares_the_network_and_reads_the_post_without_its_knowledge(trained_tiny, synthetic_split):
    model, _ = trained_tiny
    _, val = synthetic_split
    assert all(p.knowledge for p in val)
    view = model.without_knowledge()
    assert view.network is model.network and view.schema == model.schema
    assert not view.assembler.parts.knowledge and view.assembler.parts.image_description
    assert model.assembler.parts == InputParts()  # the model itself still reads its knowledge
    assert view.predict(val) == model.predict(bare(val))
    assert model.predict(val) != view.predict(val)  # the knowledge does change what this model reads


def test_the_weight_averages_the_span_probabilities_of_both_readings(trained_tiny, synthetic_split):
    model, _ = trained_tiny
    _, val = synthetic_split
    with_knowledge, without = entity_scores(model, val), entity_scores(model, bare(val))
    assert with_knowledge != without
    mixed = entity_scores(weighted(model, 0.25), val)
    # 1e-5: both readings share a batch, and float32 sums come out a few ulps apart with other batch shapes
    for scores, a, b in zip(mixed, with_knowledge, without, strict=True):
        assert scores == pytest.approx([0.75 * x + 0.25 * y for x, y in zip(a, b, strict=True)], abs=1e-5)


def test_weights_zero_and_one_are_each_reading_alone(trained_tiny, synthetic_split):
    model, _ = trained_tiny
    _, val = synthetic_split
    assert weighted(model, 0.0).predict(val) == model.predict(val)
    assert weighted(model, 1.0).predict(val) == model.predict(bare(val))
    assert [m for m, _ in knowledge_readings(weighted(model, 1.0))] != [model]


def test_a_model_without_knowledge_in_its_inputs_reads_each_post_once(tiny_encoder):
    text_only = SpanPairExtractor(
        SpanPairConfig(encoder=str(tiny_encoder), knowledge_free_weight=0.5), parts=InputParts.preset("only_text")
    )
    assert knowledge_readings(text_only) == [(text_only, 1.0)]


def test_an_ensemble_member_brings_both_readings_within_its_share(trained_tiny, synthetic_split):
    model, _ = trained_tiny
    _, val = synthetic_split
    member = weighted(model, 0.5)
    assert SpanPairEnsemble([member]).predict(val) == member.predict(val)
    # beside a plain member each has half: the weighted member's half goes a quarter to each reading
    units = score_posts(
        [model, model, model.without_knowledge()],
        val,
        model.config,
        model.schema,
        batch_size=8,
        progress=False,
        weights=[0.5, 0.25, 0.25],
    )
    assert SpanPairEnsemble([model, member]).predict(val) == decode_scored(val, units, model.config, rescreen=False)


def test_the_weight_is_saved_with_the_model(trained_tiny, tmp_path):
    model, _ = trained_tiny
    directory = weighted(model, 0.3).save(tmp_path / "weighted")
    assert SpanPairExtractor.from_pretrained(directory).config.knowledge_free_weight == 0.3
