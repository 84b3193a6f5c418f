"""Self-training on the tiny random BERT: what the teacher's pseudo-labels hold, and the two-stage fit."""

from __future__ import annotations

import pytest

from kecpm.extractor import SpanPairConfig, SpanPairExtractor, TrainConfig, load_extractor, pseudo_label


def _student(tiny_encoder) -> SpanPairExtractor:
    return SpanPairExtractor(SpanPairConfig(encoder=str(tiny_encoder), hidden_size=32, max_length=96))


def _unlabelled(posts):
    return [p.model_copy(update={"quintuples": [], "knowledge": []}) for p in posts]


def test_pseudo_labels_are_the_teachers_strict_decoding_and_posts_without_any_are_left_out(
    trained_tiny, synthetic_split
):
    teacher, directory = trained_tiny
    _, val = synthetic_split
    unlabelled = _unlabelled(val)
    before = teacher.config

    labelled = pseudo_label(teacher, unlabelled, relation_threshold=0.0)
    oracle = load_extractor(directory)  # the same weights, decoding set by hand
    oracle.config = oracle.config.model_copy(update={"relation_threshold": 0.0, "at_least_one": False})
    expected = {p.id: q for p, q in zip(unlabelled, oracle.predict(unlabelled), strict=True) if q}
    assert expected and {p.id: p.quintuples for p in labelled} == expected
    tokens = {p.id: p.tokens for p in unlabelled}
    assert all(p.tokens == tokens[p.id] for p in labelled)

    # a threshold no probability reaches keeps nothing, where prediction forces a quintuple on every post
    assert pseudo_label(teacher, unlabelled, relation_threshold=1.01) == []
    assert all(teacher.predict(unlabelled))
    assert teacher.config == before  # the teacher decodes as it did


def test_pseudo_labels_need_a_span_pair_teacher(synthetic_split):
    with pytest.raises(TypeError, match="span-pair teacher"):
        pseudo_label(object(), synthetic_split[1])  # type: ignore[arg-type]


def test_fit_with_pseudo_labels_trains_on_them_first_then_as_a_fresh_run_on_the_labelled_posts(
    trained_tiny, tiny_encoder, synthetic_split, scorer, tmp_path
):
    import torch

    teacher, _ = trained_tiny
    train, val = synthetic_split
    pseudo = pseudo_label(teacher, _unlabelled(val), relation_threshold=0.0)
    assert pseudo
    config = TrainConfig(epochs=2, head_learning_rate=3e-3, pseudo_epochs=1, return_freed_memory=False)

    student = _student(tiny_encoder)
    report = student.fit(train, val, scorer=scorer, config=config, pseudo=pseudo, progress=False)
    assert report.pseudo_seconds > 0 and len(report.history) == 2

    # the same as one epoch on the pseudo-labels, kept whatever its val score, then a fit on train
    staged = _student(tiny_encoder)
    epochs = iter([1.0])
    staged.fit(
        pseudo,
        val,
        scorer=lambda gold, predicted: next(epochs),
        config=config.model_copy(update={"epochs": 1}),
        progress=False,
    )
    staged.fit(train, val, scorer=scorer, config=config, progress=False)
    plain = _student(tiny_encoder)
    plain.fit(train, val, scorer=scorer, config=config, progress=False)
    weights = student.network.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in staged.network.state_dict().items())
    assert not all(torch.equal(weights[k], v) for k, v in plain.network.state_dict().items())

    # the card says what was trained on first
    loaded = load_extractor(student.save(tmp_path / "student"))
    assert loaded.training_data.pseudo.posts == len(pseudo)
    assert loaded.training_data.pseudo.quintuples == sum(len(p.quintuples) for p in pseudo)
    assert plain.training_data.pseudo is None
