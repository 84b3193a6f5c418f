from __future__ import annotations

import pytest

from kecpm.extractor import InputAssembler, InputParts, SpanPairConfig
from kecpm.extractor.span_pair.encoding import (
    DISTANCE_BUCKETS,
    MENTION_SHAPES,
    SHAPES,
    InputEncoder,
    distance,
    shared_sentence,
    word_shape,
)
from kecpm.records import Post

_POST = Post(
    id="m1",
    text="Alva Brenner met the mayor of Oakline",
    image_descriptions=["two people on a stage"],
    knowledge=["ALVA BRENNER is a singer.", "Oakline's mayor is elected.", "Mayoral races: often close."],
)


def _encoder(tokenizer, parts: InputParts | None = None, **config) -> InputEncoder:
    assembler = InputAssembler(parts=parts or InputParts())
    return InputEncoder(tokenizer, SpanPairConfig(**config), assembler, use_types=True)


def test_a_span_reads_its_first_mention_in_the_context(minilm_tokenizer):
    tokenizer = minilm_tokenizer
    encoded = _encoder(tokenizer).encode(_POST, with_labels=False)
    tokens = tokenizer.convert_ids_to_tokens(encoded.ids)
    mentions = {" ".join(_POST.tokens[i:j]): m for (i, j), m in zip(encoded.spans, encoded.mentions, strict=True)}
    knowledge_start = tokens.index("knowledge")

    def words(name: str) -> str:
        start, end = mentions[name]
        return tokenizer.convert_tokens_to_string(tokens[start:end])

    assert words("Alva Brenner") == "alva brenner"  # case-blind, in the knowledge, not in the text
    assert mentions["Alva Brenner"][0] > knowledge_start
    assert words("Oakline") == "oakline"  # a whole word before an apostrophe
    assert mentions["mayor"][0] > mentions["Oakline"][0]  # "Mayoral" is not "mayor"; the first whole word is
    assert mentions["met"] == (0, 0)  # not mentioned
    assert mentions["Brenner met"] == (0, 0)
    assert encoded.sentence_sets == []  # co-mentions are off by default
    # without context nothing is mentioned, and an encoder without the features finds no mentions
    bare = _POST.model_copy(update={"image_descriptions": [], "knowledge": []})
    assert set(_encoder(tokenizer).encode(bare, with_labels=False).mentions) == {(0, 0)}
    plain = _encoder(tokenizer, context_mentions=False, context_comentions=False).encode(_POST, with_labels=False)
    assert plain.mentions == [] and plain.sentence_sets == []


def test_a_span_gets_how_the_context_writes_it(minilm_tokenizer):
    post = Post(
        id="m2",
        text="the mayor of oakline fc met Alva at the stage",
        image_descriptions=["two people on a stage"],
        knowledge=['"Alva" is a singer.', "The club Oakline FC has a mayor.", "A stage is a platform.", "Oakline fc."],
    )
    encoded = _encoder(minilm_tokenizer, mention_shapes=True).encode(post, with_labels=False)
    spans = [" ".join(post.tokens[i:j]) for i, j in encoded.spans]
    shape = {span: MENTION_SHAPES[k] for span, k in zip(spans, encoded.mention_shapes, strict=True)}
    assert shape["Alva"] == "sentence_start"  # opens a knowledge sentence (quotes and the "knowledge:" label skipped)
    assert shape["oakline fc"] == "sentence_start"  # the strongest of its mentions: "Oakline FC", then "Oakline fc."
    assert shape["oakline"] == "sentence_start" and shape["fc"] == "capitalized"
    assert shape["mayor"] == "lower" and shape["stage"] == "lower"  # "A stage" does not open with it
    assert shape["met"] == shape["mayor of"] == "none"
    assert _encoder(minilm_tokenizer).encode(post, with_labels=False).mention_shapes == []  # off by default


def test_a_pair_reads_the_first_context_sentence_that_names_both(minilm_tokenizer):
    encoded = _encoder(minilm_tokenizer, context_comentions=True).encode(_POST, with_labels=False)
    tokens = minilm_tokenizer.convert_ids_to_tokens(encoded.ids)
    sentences = [minilm_tokenizer.convert_tokens_to_string(tokens[a:b]) for a, b in encoded.sentences]
    assert sentences == ["image : two people on a stage", "knowledge : alva brenner is a singer.",
                         "oakline ' s mayor is elected.", "mayoral races : often close."]  # fmt: skip
    span = {" ".join(_POST.tokens[i:j]): k for k, (i, j) in enumerate(encoded.spans)}
    assert shared_sentence(encoded, span["mayor"], span["Oakline"]) == encoded.sentences[2]
    assert shared_sentence(encoded, span["Oakline"], span["mayor"]) == encoded.sentences[2]
    assert shared_sentence(encoded, span["Alva Brenner"], span["Oakline"]) == (0, 0)


@pytest.mark.parametrize("preset", ["imagecap_know", "imagecap", "know", "only_text"])
@pytest.mark.parametrize("descriptions", [[], [""], ["  ", "\t"]])
def test_a_post_without_an_image_description_is_read_without_the_image_segment(minilm_tokenizer, preset, descriptions):
    post = _POST.model_copy(update={"image_descriptions": descriptions})
    encoded = _encoder(minilm_tokenizer, InputParts.preset(preset)).encode(post, with_labels=False)
    tokens = minilm_tokenizer.convert_ids_to_tokens(encoded.ids)
    assert "image" not in tokens
    with_knowledge = InputParts.preset(preset).knowledge
    assert tokens.count("[SEP]") == (2 if with_knowledge else 1)  # the text, then the knowledge if read
    assert ("knowledge" in tokens) is with_knowledge


def test_labels_mark_the_gold_spans_and_pairs(minilm_tokenizer, synthetic_split):
    post = synthetic_split[0][0]
    encoded = _encoder(minilm_tokenizer).encode(post, with_labels=True)
    labelled = {encoded.spans[k] for k, label in enumerate(encoded.span_labels) if label}
    gold = {e.span for q in post.quintuples for e in (q.head, q.tail)}
    assert labelled == gold
    assert len(encoded.pairs) == len({(q.head.span, q.tail.span) for q in post.quintuples})
    assert _encoder(minilm_tokenizer).encode(post, with_labels=False).pairs == {}


def test_distance_buckets_say_how_far_and_which_side():
    assert distance((0, 1), (1, 2)) == 0  # adjacent, tail after head
    assert distance((0, 1), (5, 6)) == DISTANCE_BUCKETS.index(6)  # a gap of 4 words
    assert distance((5, 6), (0, 1)) == len(DISTANCE_BUCKETS) + DISTANCE_BUCKETS.index(6)  # tail first
    assert distance((0, 1), (100, 101)) == len(DISTANCE_BUCKETS) - 1


@pytest.mark.parametrize(
    ("word", "shape"),
    [
        ("mayor", "lower"), ("Oakline", "capitalized"), ("I", "capitalized"), ("NBA", "upper"),
        ("iHeartAwards", "mixed"), ("@IGN", "handle"), ("#MetGala", "hashtag"), ("#", "hash"), ("@", "at"),
        ("2018", "number"), ("1,000", "number"), ("A380", "alnum"), (":", "punct"), ("...", "punct"),
        ("https://t.co/x1", "url"), ("\U0001f600", "other"),
    ],
)  # fmt: skip
def test_word_shapes_keep_what_lowercasing_loses(word, shape):
    assert SHAPES[word_shape(word)] == shape


def test_a_span_carries_the_shapes_of_its_edges_and_neighbours(minilm_tokenizer):
    post = Post(id="s1", text="RT @IGN : Edward James Olmos # MetGala")
    plain = _encoder(minilm_tokenizer, word_shapes=False).encode(post, with_labels=False)
    assert plain.shapes == []  # off: nothing computed
    encoded = _encoder(minilm_tokenizer, word_shapes=True).encode(post, with_labels=False)
    names = {span: tuple(SHAPES[k] for k in shape) for span, shape in zip(encoded.spans, encoded.shapes, strict=True)}
    assert names[(3, 6)] == ("capitalized", "capitalized", "punct", "hash")  # Edward James Olmos
    assert names[(7, 8)] == ("mixed", "mixed", "hash", "none")  # MetGala, last word
    assert names[(0, 1)] == ("upper", "upper", "none", "handle")  # RT, first word
    batch = _encoder(minilm_tokenizer, word_shapes=True).batch([encoded, encoded])
    assert tuple(batch["shapes"].shape) == (2 * len(encoded.spans), 4)


@pytest.mark.parametrize(
    "words, contexts",
    [
        (_POST.tokens, ["image: two people on a stage", " ".join(_POST.knowledge)]),
        # lower() lengthens "İ", so those spans are matched case for case (as mentions() does)
        (["İstanbul", "and", "Ankara", "İstanbul"], ["knowledge: İstanbul is big. ankara is the capital."]),
        (["a", "a", "a", "b"], ["a a b a. a a a a"]),
    ],
)
def test_span_mentions_skip_only_spans_that_cannot_be_there(minilm_tokenizer, words, contexts):
    from kecpm.extractor.span_pair.encoding import ContextIndex

    encoder = _encoder(minilm_tokenizer)
    parts, start = [], 1
    for text in contexts:
        ids, offsets = encoder._tokens(text)
        parts.append((text, start, offsets))
        start += len(ids) + 1
    index = ContextIndex(parts, shapes=True)
    spans = [(i, j) for i in range(len(words)) for j in range(i + 1, len(words) + 1)]
    expected = [index.mentions(" ".join(words[i:j])) for i, j in spans]  # every span looked for, the oracle
    assert index.span_mentions(words, spans) == expected
    assert index.span_mentions(words, spans[::-1]) == expected[::-1]  # whatever order the spans come in
    assert any(m.first != (0, 0) for m in expected) and any(m.shape for m in expected)


def test_token_ranges_by_bisection_equal_a_scan_of_every_token():
    import random

    from kecpm.extractor.span_pair.encoding import _TokenOffsets

    rng = random.Random(0)
    ordered, position = [], 0
    for _ in range(40):
        start = position + rng.randint(0, 2)
        position = start + rng.randint(0, 4)  # zero-length tokens too
        ordered.append((start, position))
    shuffled = rng.sample(ordered, len(ordered))
    for offsets in (ordered, shuffled):
        found = _TokenOffsets(offsets)
        assert found.ordered == (offsets is ordered)
        for _ in range(300):
            a = rng.randint(0, position + 2)
            b = a + rng.randint(1, 12)
            assert list(found.overlapping(a, b)) == [k for k, (s, e) in enumerate(offsets) if s < b and e > a]


def test_context_tokens_are_read_once_per_text_and_match_the_tokenizer(minilm_tokenizer):
    encoder = _encoder(minilm_tokenizer)
    first = encoder.encode(_POST, with_labels=False)
    cached = dict(encoder._text_cache)
    assert encoder.encode(_POST, with_labels=False) == first
    assert encoder._text_cache == cached  # the second time, nothing was tokenized again
    long = " ".join(["Oakline's mayor is elected."] * 40)  # past the 128 tokens that tokenizer.json pads and cuts to
    cached[long] = encoder._tokens(long)
    assert len(cached[long][0]) > 128
    for text, (ids, offsets) in cached.items():
        direct = minilm_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        assert (ids, offsets) == (direct["input_ids"], [tuple(o) for o in direct["offset_mapping"]])
