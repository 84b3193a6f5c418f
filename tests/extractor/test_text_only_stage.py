"""TrainConfig.text_only_epochs on the tiny random BERT: the network reads the training posts' text alone
first, then the full input, and that stage is exactly a fit on the stripped posts."""

from __future__ import annotations

import pytest

from kecpm.extractor import SpanPairConfig, SpanPairExtractor, TrainConfig, load_extractor


def _model(tiny_encoder) -> SpanPairExtractor:
    return SpanPairExtractor(SpanPairConfig(encoder=str(tiny_encoder), hidden_size=32, max_length=96))


def _with_image(posts):
    return [p.model_copy(update={"image_descriptions": [f"a photo of {p.tokens[0]}"]}) for p in posts]


def _two_fits(model, first, train, val, scorer, config):
    """One epoch on ``first``, kept whatever its val score, then a fit on ``train``; both without the option."""
    single = config.model_copy(update={"text_only_epochs": 0})
    model.fit(
        first, val, scorer=lambda gold, predicted: 1.0, config=single.model_copy(update={"epochs": 1}), progress=False
    )
    model.fit(train, val, scorer=scorer, config=single, progress=False)
    return model


def test_text_only_epochs_train_on_the_posts_text_alone_then_on_the_full_input(
    tiny_encoder, synthetic_split, scorer, tmp_path
):
    import torch

    train, val = (_with_image(posts) for posts in synthetic_split)
    assert all(p.knowledge and p.image_descriptions for p in train)
    config = TrainConfig(epochs=2, head_learning_rate=3e-3, text_only_epochs=1, return_freed_memory=False)

    model = _model(tiny_encoder)
    report = model.fit(train, val, scorer=scorer, config=config, progress=False)
    assert report.text_only_seconds > 0 and len(report.history) == 2  # val selects in the second stage only

    # the same as one epoch on the posts without image description and knowledge, kept whatever its
    # val score, then a fit on the full input
    stripped = [p.model_copy(update={"image_descriptions": [], "knowledge": []}) for p in train]
    staged = _two_fits(_model(tiny_encoder), stripped, train, val, scorer, config)
    weights = model.network.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in staged.network.state_dict().items())

    # not the same as reading the full input in the first stage too, nor as no first stage
    full_first = _two_fits(_model(tiny_encoder), train, train, val, scorer, config)
    plain = _model(tiny_encoder)
    plain_report = plain.fit(
        train, val, scorer=scorer, config=config.model_copy(update={"text_only_epochs": 0}), progress=False
    )
    assert plain_report.text_only_seconds == 0
    for other in (full_first, plain):
        assert not all(torch.equal(weights[k], v) for k, v in other.network.state_dict().items())

    # the setting is saved with the model; the training posts keep their knowledge
    loaded = load_extractor(model.save(tmp_path / "model"))
    assert loaded.train_config.text_only_epochs == 1
    assert all(p.knowledge for p in train)


def test_text_only_epochs_are_never_negative():
    with pytest.raises(ValueError, match="text_only_epochs"):
        TrainConfig(text_only_epochs=-1)


def test_warm_learning_rate_applies_to_the_selected_stage_after_an_earlier_one(tiny_encoder, synthetic_split, scorer):
    import torch

    train, val = (_with_image(posts) for posts in synthetic_split)
    config = TrainConfig(
        epochs=2, head_learning_rate=3e-3, text_only_epochs=1, warm_learning_rate=1e-5, return_freed_memory=False
    )

    def same(a, b) -> bool:
        other = b.network.state_dict()
        return all(torch.equal(v, other[k]) for k, v in a.network.state_dict().items())

    model = _model(tiny_encoder)
    model.fit(train, val, scorer=scorer, config=config, progress=False)
    stripped = [p.model_copy(update={"image_descriptions": [], "knowledge": []}) for p in train]
    # the text-only epoch at learning_rate, then the selected stage at warm_learning_rate
    first = _model(tiny_encoder)
    first.fit(
        stripped,
        val,
        scorer=lambda gold, predicted: 1.0,
        config=config.model_copy(update={"epochs": 1, "text_only_epochs": 0}),
        progress=False,
    )
    first.fit(
        train,
        val,
        scorer=scorer,
        config=config.model_copy(update={"text_only_epochs": 0, "learning_rate": 1e-5}),
        progress=False,
    )
    assert same(model, first)
    # the stages at learning_rate throughout differ
    assert not same(model, _two_fits(_model(tiny_encoder), stripped, train, val, scorer, config))

    # with no earlier stage the option changes nothing
    alone = _model(tiny_encoder)
    alone.fit(train, val, scorer=scorer, config=config.model_copy(update={"text_only_epochs": 0}), progress=False)
    plain = _model(tiny_encoder)
    plain.fit(
        train,
        val,
        scorer=scorer,
        config=config.model_copy(update={"text_only_epochs": 0, "warm_learning_rate": None}),
        progress=False,
    )
    assert same(alone, plain)
