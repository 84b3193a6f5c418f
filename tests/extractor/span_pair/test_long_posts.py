"""Long posts: read (and learnt) in overlapping windows; posts that fit keep their one-pass path."""

from __future__ import annotations

import copy
import logging
import random

import pytest

from kecpm.extractor import SpanPairConfig, SpanPairExtractor, TrainConfig
from kecpm.extractor.windows import shift, window_post
from kecpm.records import NO_WORDS, Entity, Post, Quintuple
from kecpm.synthetic import synthetic_posts

FILLER = "the quiet morning passes slowly while people walk along the river and talk about the weather".split()
MAX_LENGTH = 64


def _filler(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(FILLER) for _ in range(n)]


def _moved(entity: Entity, offset: int) -> Entity:
    assert entity.span is not None
    return entity.model_copy(update={"span": (entity.span[0] + offset, entity.span[1] + offset)})


def _join(id: str, parts: list[list[str] | Post]) -> Post:
    """A post of word lists and posts in a row, with the posts' quintuples moved to where they stand."""
    tokens: list[str] = []
    quintuples: list[Quintuple] = []
    for part in parts:
        if isinstance(part, Post):
            offset = len(tokens)
            tokens += part.tokens
            quintuples += [
                Quintuple(head=_moved(q.head, offset), tail=_moved(q.tail, offset), relation=q.relation)
                for q in part.quintuples
            ]
        else:
            tokens += part
    return Post(id=id, tokens=tokens, quintuples=quintuples)


@pytest.fixture(scope="module")
def short_posts() -> list[Post]:
    return [p.model_copy(update={"image_descriptions": []}) for p in synthetic_posts(42, seed=5, id_prefix="short")]


@pytest.fixture(scope="module")
def window_model(tiny_encoder, short_posts, scorer) -> SpanPairExtractor:
    """A tiny span-pair model trained on the synthetic posts amid filler words; a third of them are too
    long for one pass, so training reads them in windows too."""
    rng = random.Random(0)
    train = [
        _join(p.id, [_filler(rng, rng.choice([0, 4, 20, 60])), p, _filler(rng, rng.choice([0, 4, 20, 60]))])
        for p in short_posts
    ]
    config = SpanPairConfig(encoder=str(tiny_encoder), hidden_size=32, max_length=MAX_LENGTH, window_overlap=4)
    model = SpanPairExtractor(config)
    model.fit(
        train,
        train,
        scorer=scorer,
        config=TrainConfig(epochs=20, patience=20, head_learning_rate=5e-3, learning_rate=1e-3, threads=1),
        progress=False,
    )
    assert sum(model._windows(p) is not None for p in train) >= 5  # some were learnt in windows
    return model


def test_a_post_5x_longer_than_the_window_yields_the_quintuples_planted_in_its_first_and_last_parts(
    window_model: SpanPairExtractor, short_posts: list[Post]
) -> None:
    # Decisions over the threshold only (no "at least its best pair"): each planted quintuple must be found
    # in its window on its own merit and survive the merge of 13 windows.
    model = copy.copy(window_model)
    model.config = model.config.model_copy(update={"at_least_one": False})
    rng = random.Random(1)
    filler = _filler(rng, 5 * MAX_LENGTH)
    # The planted posts: the first one the model reads right in the long post's first window read alone
    # (as a post of its own, in one pass), and likewise the last one in its last window.
    heads = [_join("long-one", [p, filler, short_posts[0]]) for p in short_posts]
    tails = [_join("long-one", [short_posts[0], filler, p]) for p in short_posts]
    first_windows = [window_post(p, model._windows(p)[0]) for p in heads]
    last_windows = [window_post(p, model._windows(p)[-1]) for p in tails]
    firsts = [
        p
        for p, w, got in zip(short_posts, first_windows, model.predict(first_windows), strict=True)
        if w.quintuples[0] in got
    ]
    lasts = [
        p
        for p, w, got in zip(short_posts, last_windows, model.predict(last_windows), strict=True)
        if w.quintuples[-1] in got
    ]
    assert firsts and lasts, "the model reads no planted post right in a window: train it better"
    first = firsts[0]
    last = next((p for p in reversed(lasts) if p is not first), None)
    assert last is not None, "the same post is the only one read right at both ends"
    long_post = _join("long-one", [first, filler, last])
    assert model.inputs.text_cost(long_post) > 5 * MAX_LENGTH
    windows = model._windows(long_post)
    assert windows is not None and len(windows) > 10

    (found,) = model.predict([long_post])
    planted = [(q.surface(), q.head.span, q.tail.span) for q in long_post.quintuples]
    got = [(q.surface(), q.head.span, q.tail.span) for q in found]
    assert planted[0] in got, "the first part's quintuple"
    assert planted[-1] in got, "the last part's quintuple, 5 windows' worth of words later"
    types: dict[tuple[int, int] | None, object] = {}
    for q in found:  # one entity, one type, spans on the post's tokens
        for e in (q.head, q.tail):
            assert types.setdefault(e.span, e.type) == e.type
            assert e.span is not None and " ".join(long_post.tokens[e.span[0] : e.span[1]]) == e.name


def test_posts_that_fit_take_the_one_pass_path(window_model: SpanPairExtractor, short_posts: list[Post]) -> None:
    units = window_model._encode(short_posts, with_labels=False)
    assert [(i, w) for i, w, _ in units] == [(i, None) for i in range(len(short_posts))]
    assert [e.ids for _, _, e in units] == [window_model.inputs.encode(p, with_labels=False).ids for p in short_posts]


def test_a_long_training_post_is_learnt_in_windows_with_every_entity_labelled(
    window_model: SpanPairExtractor, short_posts: list[Post], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = short_posts[0], short_posts[1]
    rng = random.Random(2)
    post = _join("split", [a, _filler(rng, 80), b])
    head, tail = post.quintuples[0].head, post.quintuples[1].tail
    post = post.model_copy(update={"quintuples": [*post.quintuples, Quintuple(head=head, tail=tail, relation="peer")]})
    windows = window_model._windows(post)
    assert windows is not None
    with caplog.at_level(logging.INFO, logger="kecpm.extractor"):
        examples = window_model._examples([post])
    assert len(examples) == len(windows)
    assert "gold pairs in no one window (not learnt as pairs)': 1" in caplog.text
    # the cross-window pair is not learnt, but both its entities are labelled wherever they stand whole
    learnt = {
        (shift(e.spans[h], w.start), shift(e.spans[t], w.start))
        for w, e in zip(windows, examples, strict=True)
        for h, t in e.pairs
    }
    assert learnt == {(q.head.span, q.tail.span) for q in post.quintuples[:2]}
    for entity in (head, tail):
        holding = [
            (w, e)
            for w, e in zip(windows, examples, strict=True)
            if w.start <= entity.span[0] and entity.span[1] <= w.end
        ]
        assert holding
        for w, e in holding:
            assert e.span_labels[e.spans.index(shift(entity.span, -w.start))] > 0


def test_a_post_without_words_gets_nothing_with_a_warning_naming_it(
    window_model: SpanPairExtractor, short_posts: list[Post], caplog: pytest.LogCaptureFixture
) -> None:
    wordless = Post(id="links-only", text="https://t.co/abc www.example.com \N{FACE WITH TEARS OF JOY} !!")
    with caplog.at_level(logging.WARNING, logger="kecpm.extractor"):
        predictions = window_model.predict([short_posts[0], wordless, short_posts[1]])
    assert predictions[1] == []
    assert predictions[0] == window_model.predict([short_posts[0]])[0] and predictions[0]
    assert f"record 'links-only': {NO_WORDS}" in caplog.text


def test_window_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"window_tokens \(300\) must not exceed max_length \(256\)"):
        SpanPairConfig(window_tokens=300)
    assert SpanPairConfig().window_length == 128 and SpanPairConfig(window_tokens=200).window_length == 200
