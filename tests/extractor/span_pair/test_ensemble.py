from __future__ import annotations

import copy

import pytest

from kecpm.extractor import InputParts, SpanPairConfig, SpanPairEnsemble, SpanPairExtractor, TrainConfig
from kecpm.extractor.span_pair.model import score_posts
from kecpm.records import Post


@pytest.fixture(scope="module")
def text_only(tiny_encoder, synthetic_split, scorer):
    """A second member that reads the text alone, trained with another seed."""
    train, val = synthetic_split
    model = SpanPairExtractor(
        SpanPairConfig(encoder=str(tiny_encoder), hidden_size=32, max_length=96), parts=InputParts.preset("only_text")
    )
    model.fit(train, val, scorer=scorer, config=TrainConfig(epochs=2, seed=5, head_learning_rate=3e-3), progress=False)
    return model


def entity_scores(members, posts, config, schema):
    return [unit[3] for unit in score_posts(members, posts, config, schema, batch_size=8, progress=False)]


def test_one_member_predicts_as_the_model_itself(trained_tiny, synthetic_split):
    model, _ = trained_tiny
    _, val = synthetic_split
    assert SpanPairEnsemble([model]).predict(val) == model.predict(val)


def test_a_model_twice_predicts_as_the_model_itself(trained_tiny, synthetic_split):
    model, _ = trained_tiny
    _, val = synthetic_split
    assert SpanPairEnsemble([model, model]).predict(val, batch_size=4) == model.predict(val)


def test_members_with_other_inputs_average_their_span_probabilities(trained_tiny, text_only, synthetic_split):
    model, _ = trained_tiny
    _, val = synthetic_split
    ensemble = SpanPairEnsemble([model, text_only])
    averaged = entity_scores(ensemble.members, val, ensemble.config, ensemble.schema)
    alone = [entity_scores([m], val, m.config, m.schema) for m in (model, text_only)]
    assert averaged != alone[0] and averaged != alone[1]
    # 1e-5: the ensemble batches its members' inputs together, and float32 sums come out a few ulps apart
    # with other batch shapes on some CPUs (AVX-512 kernels: 1.01e-6 in CI).
    for mixed, a, b in zip(averaged, *alone, strict=True):
        assert mixed == pytest.approx([(x + y) / 2 for x, y in zip(a, b, strict=True)], abs=1e-5)
    predictions = ensemble.predict(val)
    assert len(predictions) == len(val) and all(predictions)
    for post, quintuples in zip(val, predictions, strict=True):
        for q in quintuples:
            assert " ".join(post.tokens[q.head.span[0] : q.head.span[1]]) == q.head.name
            assert [q.head.type.value, q.tail.type.value] in [list(p) for p in ensemble.schema[q.relation.value]]


def test_the_ensemble_s_relation_choice_comes_from_averaged_pair_probabilities(
    trained_tiny, text_only, synthetic_split
):
    model, _ = trained_tiny
    _, val = synthetic_split
    ensemble = SpanPairEnsemble([model, text_only])
    units = score_posts(ensemble.members, val[:6], ensemble.config, ensemble.schema, batch_size=8, progress=False)
    # the same candidates scored by each member alone: the ensemble's pair probability is their mean
    import torch

    from kecpm.extractor.span_pair.encoding import pair_rows

    modes = [m.network.training for m in ensemble.members]
    try:
        for m in ensemble.members:
            m.network.eval()  # as prediction reads them: no dropout
        with torch.inference_mode():
            examples = [[m.inputs.encode(p, with_labels=False) for p in val[:6]] for m in ensemble.members]
            readings = [m._read_spans(batch) for m, batch in zip(ensemble.members, examples, strict=True)]
            candidates = [sorted({h for _, h, _ in unit[4]} | {t for _, _, t in unit[4]}) for unit in units]
            rows = [r for r in pair_rows(examples[0], candidates) if any(r[1:] == s[1:] for s in units[r[0]][4])]
            probs = [m._pair_probs(r, b, rows) for m, r, b in zip(ensemble.members, readings, examples, strict=True)]
    finally:
        for m, mode in zip(ensemble.members, modes, strict=True):
            m.network.train(mode)
    expected = {(b, h, t): 1 - (p0[0] + p1[0]).item() / 2 for (b, h, t), p0, p1 in zip(rows, *probs, strict=True)}
    got = {(b, h, t): choice[0] for b, unit in enumerate(units) for choice, h, t in unit[4]}
    assert got.keys() == expected.keys() and got
    for key, value in got.items():
        assert value == pytest.approx(expected[key], abs=1e-5)


def test_members_that_cut_a_post_differently_are_refused_by_name(tiny_encoder, trained_tiny, synthetic_split, scorer):
    model, _ = trained_tiny
    train, val = synthetic_split
    narrow = SpanPairExtractor(
        SpanPairConfig(encoder=str(tiny_encoder), hidden_size=32, max_length=96, max_span_width=2)
    )
    narrow.fit(train[:8], val[:4], scorer=scorer, config=TrainConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match=rf"record '{val[0].id}': the ensemble's members read it into different spans"):
        SpanPairEnsemble([model, narrow]).predict(val)
    # the same network reading a long post in smaller windows: more windows than the other member has
    smaller = copy.copy(model)
    smaller.config = model.config.model_copy(update={"window_tokens": 24})
    long_post = Post(id="long-one", tokens=val[0].tokens * 12)
    with pytest.raises(ValueError, match=r"record 'long-one': the ensemble's members read it into different spans"):
        SpanPairEnsemble([model, smaller]).predict([long_post])


def test_bad_members_are_clear_errors(trained_tiny):
    model, _ = trained_tiny
    with pytest.raises(ValueError, match="at least one member"):
        SpanPairEnsemble([])
    with pytest.raises(ValueError, match="member 1 is not trained"):
        SpanPairEnsemble([model, SpanPairExtractor()])
    with pytest.raises(TypeError, match="member 0 is a str"):
        SpanPairEnsemble(["runs/model"])  # type: ignore[list-item]


def test_a_post_without_words_gets_nothing_and_the_rest_are_predicted(trained_tiny, synthetic_split):
    model, _ = trained_tiny
    _, val = synthetic_split
    posts = [val[0], Post(id="emoji-only", tokens=["🙂"]), val[1]]
    predictions = SpanPairEnsemble([model, model]).predict(posts)
    assert predictions[1] == [] and predictions[0] == model.predict([val[0]])[0] and predictions[2]


async def test_saved_members_load_and_apredict_matches_predict(trained_tiny, synthetic_split):
    model, directory = trained_tiny
    _, val = synthetic_split
    ensemble = SpanPairEnsemble.from_pretrained([directory, directory])
    assert await ensemble.apredict(val[:5]) == ensemble.predict(val[:5]) == model.predict(val[:5])
