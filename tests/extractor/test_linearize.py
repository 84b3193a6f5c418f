from __future__ import annotations

from kecpm.extractor import linearize, parse_linearized
from kecpm.synthetic import synthetic_posts


def test_round_trip_over_every_relation():
    for post in synthetic_posts(21, seed=3):
        parsed = parse_linearized(linearize(post.quintuples), tokens=post.tokens)
        assert parsed.invalid == []
        assert parsed.quintuples == post.quintuples  # spans recovered from the tokens too


def test_bad_pieces_are_counted_not_raised():
    text = (
        'The relation between Ann (person) and Bo (person) is "couple"; '
        'The relation between Ann (person) and Oslo (place) is "place of birth"; '  # unknown type
        'The relation between Ann (person) and Bo (person) is "friends"; '  # unknown relation
        "the relation between ann (person) and;"  # cut short
        'The relation between Ann (person) and Bo (person) is "couple"'  # duplicate
    )
    parsed = parse_linearized(text)
    assert [q.surface() for q in parsed.quintuples] == [("Ann", "per", "Bo", "per", "couple")]
    assert len(parsed.invalid) == 3
    assert parse_linearized("").quintuples == []
    assert parse_linearized(")))(((;;;\n").invalid == [")))((("]


def test_lowercased_output_takes_the_posts_spelling():
    tokens = ["RT", "@x", ":", "Ann", "Lee", "joins", "Oakline", "FC"]
    parsed = parse_linearized(
        "the relation between ann lee (person) and oakline fc (organization) is ' member of '", tokens=tokens
    )
    (quintuple,) = parsed.quintuples
    assert quintuple.surface() == ("Ann Lee", "per", "Oakline FC", "org", "member_of")
    assert (quintuple.head.span, quintuple.tail.span) == ((3, 5), (6, 8))
