import pytest

from kecpm.labels import ENTITY_TYPES, RELATIONS, EntityType, Relation, parse_entity_type, parse_relation


def test_inventories_have_the_jmere_sizes():
    assert len(RELATIONS) == 21
    assert [t.value for t in ENTITY_TYPES] == ["per", "loc", "org", "misc"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("place_of_birth", Relation.PLACE_OF_BIRTH),
        ("place of birth", Relation.PLACE_OF_BIRTH),
        ("  Alternate Names ", Relation.ALTERNATE_NAMES),
        ("alumi", Relation.ALUMI),
    ],
)
def test_relations_read_in_both_spellings(text, expected):
    assert parse_relation(text) is expected


def test_natural_names_are_the_prompt_spellings():
    assert Relation.PLACE_OF_BIRTH.natural == "place of birth"
    assert EntityType.PER.natural == "person"
    assert parse_entity_type("organization") is EntityType.ORG


def test_unknown_labels_name_the_value():
    with pytest.raises(ValueError, match="'spouse'"):
        parse_relation("spouse")
    with pytest.raises(ValueError, match="'animal'"):
        parse_entity_type("animal")
