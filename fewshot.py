"""Few-shot splits fitted to a source's distribution, and reports that measure the fit.

The builder samples whole posts, stratified by relation, rarest relation first: each relation gets a
target number of quintuples (``ratio`` x its count in the source, or ``k``; at least one), and posts
holding it are drawn at random (seeded) until the target is covered, counting what posts chosen for
other relations already hold. Unlike the KECPM release, a sentence is never split into two records,
so no sentence appears twice.

The fit is measured by the Jensen-Shannon divergence (base 2, in [0, 1]) between the sample's and the
source's relation distributions, and likewise for entity types.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, Field

from .labels import ENTITY_TYPES, RELATIONS
from .records import Post

__all__ = [
    "DistributionReport",
    "build_few_shot",
    "distribution_report",
    "js_divergence",
    "relation_counts",
    "type_counts",
]


def relation_counts(posts: Sequence[Post]) -> Counter[str]:
    """Quintuples per relation (dataset names)."""
    return Counter(q.relation.value for p in posts for q in p.quintuples)


def type_counts(posts: Sequence[Post]) -> Counter[str]:
    """Entity mentions per type, counting each distinct entity of a post once."""
    return Counter(e.type.value for p in posts for e in p.entities())


def js_divergence(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Jensen-Shannon divergence (base 2) of two count or probability tables over the same labels."""
    keys = set(p) | set(q)
    p_total = sum(p.values()) or 1.0
    q_total = sum(q.values()) or 1.0
    divergence = 0.0
    for key in keys:
        a = p.get(key, 0.0) / p_total
        b = q.get(key, 0.0) / q_total
        m = (a + b) / 2
        if a > 0:
            divergence += 0.5 * a * math.log2(a / m)
        if b > 0:
            divergence += 0.5 * b * math.log2(b / m)
    return max(divergence, 0.0)


def build_few_shot(
    posts: Sequence[Post],
    *,
    ratio: float | None = None,
    k: int | None = None,
    seed: int = 0,
    min_per_relation: int = 1,
) -> list[Post]:
    """A stratified few-shot sample of ``posts``, in the source's order.

    Give either ``ratio`` (a share of each relation's quintuples, e.g. 0.07) or ``k`` (quintuples per
    relation). Deterministic for a seed.

    >>> from kecpm.synthetic import synthetic_posts
    >>> sample = build_few_shot(synthetic_posts(420), ratio=0.1, seed=17)
    >>> len(sample)
    42
    """
    if (ratio is None) == (k is None):
        raise ValueError("give exactly one of ratio= or k=")
    if ratio is not None and not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    if k is not None and k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    source = relation_counts(posts)
    targets = {
        relation: max(min_per_relation, round(ratio * count) if ratio is not None else k)  # type: ignore[operator]
        for relation, count in source.items()
    }
    holders: dict[str, list[int]] = {relation: [] for relation in source}
    for index, post in enumerate(posts):
        for relation in {q.relation.value for q in post.quintuples}:
            holders[relation].append(index)
    rng = random.Random(seed)
    chosen: set[int] = set()
    covered: Counter[str] = Counter()
    # Rarest first, so the few posts of a rare relation are not crowded out; ties by name for determinism.
    for relation in sorted(source, key=lambda r: (source[r], r)):
        candidates = [i for i in holders[relation] if i not in chosen]
        rng.shuffle(candidates)
        while covered[relation] < targets[relation] and candidates:
            # Prefer the post that overshoots the targets least, so whole posts do not inflate the
            # frequent relations; the shuffle breaks ties at random.
            best = min(range(len(candidates)), key=lambda c: _overshoot(posts[candidates[c]], covered, targets))
            index = candidates.pop(best)
            chosen.add(index)
            covered.update(q.relation.value for q in posts[index].quintuples)
    return [posts[i] for i in sorted(chosen)]


def _overshoot(post: Post, covered: Counter[str], targets: Mapping[str, int]) -> int:
    adding = Counter(q.relation.value for q in post.quintuples)
    return sum(max(0, covered[r] + n - targets[r]) - max(0, covered[r] - targets[r]) for r, n in adding.items())


class DistributionReport(BaseModel):
    """How a sample's label distributions compare with its source's."""

    records: int
    quintuples: int
    source_records: int
    source_quintuples: int
    relations: dict[str, tuple[int, int]] = Field(description="relation -> (sample count, source count)")
    entity_types: dict[str, tuple[int, int]] = Field(description="type -> (sample count, source count)")
    relation_divergence: float
    type_divergence: float

    def to_markdown(self, title: str = "Few-shot distribution") -> str:
        lines = [
            f"## {title}",
            "",
            f"{self.records} records / {self.quintuples} quintuples, from {self.source_records} / "
            f"{self.source_quintuples} ({100 * self.quintuples / max(self.source_quintuples, 1):.1f} %).",
            f"Jensen-Shannon divergence to the source: relations {self.relation_divergence:.5f}, "
            f"entity types {self.type_divergence:.5f}.",
            "",
            "| relation | sample | sample % | source | source % |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, (mine, theirs) in self.relations.items():
            lines.append(
                f"| {name} | {mine} | {100 * mine / max(self.quintuples, 1):.1f} | {theirs} | "
                f"{100 * theirs / max(self.source_quintuples, 1):.1f} |"
            )
        total_types = sum(m for m, _ in self.entity_types.values()) or 1
        total_source_types = sum(t for _, t in self.entity_types.values()) or 1
        lines += ["", "| entity type | sample | sample % | source | source % |", "|---|---:|---:|---:|---:|"]
        for name, (mine, theirs) in self.entity_types.items():
            share, source_share = 100 * mine / total_types, 100 * theirs / total_source_types
            lines.append(f"| {name} | {mine} | {share:.1f} | {theirs} | {source_share:.1f} |")
        return "\n".join(lines) + "\n"


def distribution_report(sample: Sequence[Post], source: Sequence[Post]) -> DistributionReport:
    """Compare a sample's relation and entity-type distributions with its source's."""
    sample_rel, source_rel = relation_counts(sample), relation_counts(source)
    sample_types, source_types = type_counts(sample), type_counts(source)
    return DistributionReport(
        records=len(sample),
        quintuples=sum(sample_rel.values()),
        source_records=len(source),
        source_quintuples=sum(source_rel.values()),
        relations={r.value: (sample_rel[r.value], source_rel[r.value]) for r in RELATIONS},
        entity_types={t.value: (sample_types[t.value], source_types[t.value]) for t in ENTITY_TYPES},
        relation_divergence=js_divergence(sample_rel, source_rel),
        type_divergence=js_divergence(sample_types, source_types),
    )
