"""Label inventories of JMERE: the four entity types and the 21 relations.

Each label carries two spellings: the dataset's (``place_of_birth``, ``per``), used in files and
predictions, and the natural-language one that the KECPM prompts use (``place of birth``, ``person``).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ENTITY_TYPES",
    "RELATIONS",
    "EntityType",
    "Relation",
    "parse_entity_type",
    "parse_relation",
]


class EntityType(StrEnum):
    """An entity type; the value is the dataset's short name."""

    PER = "per"
    LOC = "loc"
    ORG = "org"
    MISC = "misc"

    @property
    def natural(self) -> str:
        return _TYPE_NATURAL[self]


_TYPE_NATURAL = {
    EntityType.PER: "person",
    EntityType.LOC: "location",
    EntityType.ORG: "organization",
    EntityType.MISC: "miscellaneous",
}


class Relation(StrEnum):
    """A JMERE relation; the value is the dataset's name (underscores).

    The order is the one of the KECPM release's relation list, which its macro F1 averages over.
    """

    PARENT = "parent"
    SIBLINGS = "siblings"
    COUPLE = "couple"
    NEIGHBOR = "neighbor"
    PEER = "peer"
    CHARGES = "charges"
    ALUMI = "alumi"  # sic: the dataset's spelling of "alumni"
    ALTERNATE_NAMES = "alternate_names"
    PLACE_OF_RESIDENCE = "place_of_residence"
    PLACE_OF_BIRTH = "place_of_birth"
    MEMBER_OF = "member_of"
    SUBSIDIARY = "subsidiary"
    LOCATE_AT = "locate_at"
    CONTAIN = "contain"
    PRESENT_IN = "present_in"
    AWARDED = "awarded"
    RACE = "race"
    RELIGION = "religion"
    NATIONALITY = "nationality"
    PART_OF = "part_of"
    HELD_ON = "held_on"

    @property
    def natural(self) -> str:
        return self.value.replace("_", " ")


ENTITY_TYPES: tuple[EntityType, ...] = tuple(EntityType)
RELATIONS: tuple[Relation, ...] = tuple(Relation)

_TYPE_LOOKUP = {t.value: t for t in EntityType} | {t.natural: t for t in EntityType}
_RELATION_LOOKUP = {r.value: r for r in Relation} | {r.natural: r for r in Relation}


def parse_entity_type(value: str) -> EntityType:
    """Read a type in either spelling (``per`` or ``person``), case-insensitively."""
    found = _TYPE_LOOKUP.get(value.strip().lower())
    if found is None:
        known = ", ".join(t.value for t in EntityType)
        raise ValueError(f"unknown entity type {value!r} (known: {known})")
    return found


def parse_relation(value: str) -> Relation:
    """Read a relation in either spelling (``place_of_birth`` or ``place of birth``), case-insensitively."""
    found = _RELATION_LOOKUP.get(" ".join(value.strip().lower().split()))
    if found is None:
        found = _RELATION_LOOKUP.get(value.strip().lower())
    if found is None:
        raise ValueError(f"unknown relation {value!r} (known: {', '.join(r.value for r in Relation)})")
    return found
