"""The one answer codec: the KECPM answer sentence, rendered and parsed."""

from kecpm.answers import NO_RELATION, parse_answer, relation_sentence, render_answer
from kecpm.synthetic import synthetic_posts

TWO_RELATIONS = (
    'The relation between Ann Lee (person) and Bob Lee (person) is "siblings". '
    'The relation between Ann Lee (person) and Oslo (location) is "place of residence". '
    "Reasoning: they share a surname; Ann lives in Oslo."
)


def test_an_answer_may_state_several_quintuples_or_none() -> None:
    parsed = parse_answer(TWO_RELATIONS)
    assert [q.surface() for q in parsed.quintuples] == [
        ("Ann Lee", "per", "Bob Lee", "per", "siblings"),
        ("Ann Lee", "per", "Oslo", "loc", "place_of_residence"),
    ]
    assert parsed.invalid == []
    assert parse_answer(NO_RELATION).quintuples == []
    # Sentences in the reasoning are not read as answers.
    assert parse_answer('Reasoning: The relation between A (person) and B (person) is "peer".').quintuples == []


def test_an_unknown_relation_is_kept_as_invalid_not_raised() -> None:
    parsed = parse_answer('The relation between A (person) and B (person) is "best friends".')
    assert parsed.quintuples == [] and parsed.invalid == [
        'The relation between A (person) and B (person) is "best friends".'
    ]


def test_rendering_is_the_inverse_of_parsing() -> None:
    for post in synthetic_posts(30, seed=4):
        rendered = render_answer(post.quintuples)
        assert [q.surface() for q in parse_answer(rendered).quintuples] == [q.surface() for q in post.quintuples]
        generative = render_answer(post.quintuples, separator="; ", period=False, empty="")
        assert parse_answer(generative).quintuples == parse_answer(rendered).quintuples
    assert render_answer([]) == NO_RELATION and parse_answer(render_answer([])).quintuples == []


def test_tokens_give_spans_and_the_posts_spelling() -> None:
    tokens = ["Ann", "Lee", "visits", "Oslo"]
    sentence = relation_sentence("ann lee", "person", "Oslo", "location", "place of residence")
    (found,) = parse_answer(sentence, tokens=tokens).quintuples
    assert found.head.name == "Ann Lee" and found.head.span == (0, 2) and found.tail.span == (3, 4)
