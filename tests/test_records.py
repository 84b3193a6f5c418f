import pytest
from pydantic import ValidationError

from kecpm.records import Demonstration, Entity, Post, Quintuple


def _quintuple(head_span=(0, 2), tail_span=(4, 5)):
    return Quintuple(
        head=Entity(name="Alva Brenner", type="per", span=head_span),
        tail=Entity(name="Eastholm", type="loc", span=tail_span),
        relation="place of residence",
    )


def test_post_fills_text_and_tokens_from_each_other():
    assert Post(id="a", tokens=["Hello", "world"]).text == "Hello world"
    assert Post(id="b", text="Hello  world").tokens == ["Hello", "world"]


def test_post_accepts_matching_spans_and_normalises_labels():
    post = Post(id="p", tokens="Alva Brenner moved to Eastholm".split(), quintuples=[_quintuple()])
    q = post.quintuples[0]
    assert q.relation.value == "place_of_residence"
    assert q.surface() == ("Alva Brenner", "per", "Eastholm", "loc", "place_of_residence")
    assert post.entities() == [q.head, q.tail]


def test_span_out_of_range_is_named():
    with pytest.raises(ValidationError, match=r"tail 'Eastholm': span \[4, 9\) is out of range for 5 tokens"):
        Post(id="p", tokens="Alva Brenner moved to Eastholm".split(), quintuples=[_quintuple(tail_span=(4, 9))])


def test_span_that_spells_another_name_is_named():
    with pytest.raises(ValidationError, match="spells 'Brenner moved'"):
        Post(id="p", tokens="Alva Brenner moved to Eastholm".split(), quintuples=[_quintuple(head_span=(1, 3))])


def test_empty_post_and_bad_span_are_refused():
    for empty in ({"text": "   "}, {"tokens": []}, {"tokens": [" ", ""]}):
        with pytest.raises(ValidationError, match="the post's text is empty or only whitespace: give its words"):
            Post(id="p", **empty)
    with pytest.raises(ValidationError, match="non-empty"):
        Entity(name="x", type="per", span=(3, 3))


def test_quintuples_are_hashable_values():
    assert len({_quintuple(), _quintuple()}) == 1


def test_demonstration_from_post(posts):
    demo = Demonstration.from_post(posts[0], source="train", answer="because")
    assert demo.text == posts[0].text
    assert demo.image_description == posts[0].image_descriptions[0]
    assert demo.quintuples == tuple(posts[0].quintuples)


def test_words_are_what_can_name_something():
    from kecpm.records import has_words

    assert not has_words(["https://t.co/x1", "www.example.com/a", "\N{FACE WITH TEARS OF JOY}", "!!", "..."])
    assert has_words(["@Rihanna"]) and has_words(["#", "Knicks"]) and has_words(["http://x", "1990"])
