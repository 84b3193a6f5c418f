"""Synthetic JMERE posts: made-up names in relation templates, for tests, benchmarks and the demo.

Nothing here comes from the real data (which carries no license). Each template is one sentence
with two slots and the relation between them; ``synthetic_posts`` fills them from name pools,
deterministically for a seed, and writes a caption that sometimes mentions the head entity.
"""

from __future__ import annotations

import random

from .labels import EntityType, Relation
from .records import Entity, Post, Quintuple

__all__ = ["TEMPLATES", "synthetic_posts"]

_NAMES: dict[EntityType, tuple[str, ...]] = {
    EntityType.PER: (
        "Alva Brenner",
        "Tomas Okafor",
        "Mira Holt",
        "Jonas Vale",
        "Lena Marsh",
        "Ravi Quill",
        "Nora Lind",
        "Otto Kaye",
        "Selma Reyes",
        "Ivo Strand",
        "Pia Domar",
        "Kasim Rowe",
    ),
    EntityType.LOC: (
        "Port Avery",
        "Lake Mirren",
        "Eastholm",
        "Caldera Bay",
        "North Tessel",
        "Vantor",
        "Greyhaven",
        "Solbridge",
    ),
    EntityType.ORG: (
        "Brightwave Records",
        "Halden United",
        "Corvex Labs",
        "the Tessel Times",
        "Oakline FC",
        "Nimbus Studios",
        "Quarry Bank Union",
        "Helio Motors",
    ),
    EntityType.MISC: (
        "Starfall",
        "the Golden Reel",
        "Project Lumen",
        "Winter Open",
        "Echo Summit",
        "Blue Harbor Festival",
        "Nightfall Live",
        "the Copper Cup",
    ),
}

PER, LOC, ORG, MISC = EntityType.PER, EntityType.LOC, EntityType.ORG, EntityType.MISC
# (text with {h} and {t}, head type, tail type, relation)
TEMPLATES: tuple[tuple[str, EntityType, EntityType, Relation], ...] = (
    ("{h} shares a photo with her son {t} after the game", PER, PER, Relation.PARENT),
    ("{h} and his brother {t} open a bakery together", PER, PER, Relation.SIBLINGS),
    ("{h} and her husband {t} celebrate ten years of marriage", PER, PER, Relation.COUPLE),
    ("{h} lives next door to {t} and they wave every morning", PER, PER, Relation.NEIGHBOR),
    ("{h} and {t} perform on stage tonight", PER, PER, Relation.PEER),
    ("{h} is charged over the attack on {t}", PER, PER, Relation.CHARGES),
    ("{h} returns to {t} to give the graduation speech", PER, ORG, Relation.ALUMI),
    ("{h} , also known as {t} , announces a new album", PER, PER, Relation.ALTERNATE_NAMES),
    ("{h} moved to {t} last spring", PER, LOC, Relation.PLACE_OF_RESIDENCE),
    ("{h} was born in {t} in 1990", PER, LOC, Relation.PLACE_OF_BIRTH),
    ("{h} signs a new contract with {t}", PER, ORG, Relation.MEMBER_OF),
    ("{h} becomes a unit of {t} after the merger", ORG, ORG, Relation.SUBSIDIARY),
    ("{h} opens its new headquarters in {t}", ORG, LOC, Relation.LOCATE_AT),
    ("{h} welcomes visitors to the old harbour of {t}", LOC, LOC, Relation.CONTAIN),
    ("{h} appears in the trailer for {t}", PER, MISC, Relation.PRESENT_IN),
    ("{h} wins {t} for the second time", PER, MISC, Relation.AWARDED),
    ("{h} speaks about being {t} in the industry", PER, MISC, Relation.RACE),
    ("{h} celebrates {t} holidays with family", PER, MISC, Relation.RELIGION),
    ("{h} becomes the first {t} player to win here", PER, LOC, Relation.NATIONALITY),
    ("{h} joins {t} as its newest region", LOC, LOC, Relation.PART_OF),
    ("{h} will be held in {t} this summer", MISC, LOC, Relation.HELD_ON),
)
_PREFIXES = ("", "RT @newsdesk : ", "Breaking : ", "Photo : ", "Tonight : ")
_SUFFIXES = ("", " .", " !", " #news", " via @wire")
_CAPTIONS = (
    "a group of people standing in front of a building",
    "a man smiling at the camera",
    "a poster with large letters",
    "a crowd at an outdoor event",
    "a woman holding a trophy",
)


def _pick(rng: random.Random, kind: EntityType, avoid: str | None = None) -> str:
    while True:
        name = rng.choice(_NAMES[kind])
        if name != avoid:
            return name


def synthetic_posts(n: int, *, seed: int = 0, id_prefix: str = "synthetic") -> list[Post]:
    """``n`` valid Posts cycling through all 21 relations, with captions and gold quintuples."""
    rng = random.Random(seed)
    posts = []
    for index in range(n):
        template, head_type, tail_type, relation = TEMPLATES[index % len(TEMPLATES)]
        head = _pick(rng, head_type)
        tail = _pick(rng, tail_type, avoid=head)
        before, _, rest = template.partition("{h}")
        middle, _, after = rest.partition("{t}")
        prefix, suffix = rng.choice(_PREFIXES), rng.choice(_SUFFIXES)
        pieces = [prefix + before, head, middle, tail, after + suffix]
        tokens: list[str] = []
        spans = []
        for position, piece in enumerate(pieces):
            words = piece.split()
            if position in (1, 3):
                spans.append((len(tokens), len(tokens) + len(words)))
            tokens.extend(words)
        caption = rng.choice(_CAPTIONS)
        if rng.random() < 0.3:
            caption = f"{caption} next to {head}"
        posts.append(
            Post(
                id=f"{id_prefix}_{seed}_{index:05d}.jpg",
                img_id=f"{id_prefix}_{seed}_{index:05d}.jpg",
                tokens=tokens,
                image_descriptions=[caption],
                quintuples=[
                    Quintuple(
                        head=Entity(name=head, type=head_type, span=spans[0]),
                        tail=Entity(name=tail, type=tail_type, span=spans[1]),
                        relation=relation,
                    )
                ],
            )
        )
    return posts
