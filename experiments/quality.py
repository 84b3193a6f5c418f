"""Knowledge-quality signals that need no gold knowledge: what the critique thought of the generated
statements, how much knowledge there is, and how many gold entities it names."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from ..agents import KnowledgeResult
from ..records import Post

__all__ = ["QualitySignals", "knowledge_quality"]


class QualitySignals(BaseModel):
    """Knowledge quality that needs no gold knowledge (None where a signal does not apply)."""

    posts: int = Field(description="posts with knowledge")
    unsupported_share: float | None = Field(
        description="share of the generated statements that the first critique marked unsupported (None: no critique)"
    )
    accepted_share: float | None = Field(description="share of posts whose knowledge a critique accepted")
    statements: float = Field(description="mean statements per post")
    words: float = Field(description="mean words of knowledge per post")
    entity_mention_share: float | None = Field(description="share of gold entities named in their post's knowledge")


def knowledge_quality(results: Sequence[KnowledgeResult], posts: Sequence[Post]) -> QualitySignals:
    """Signals over ``results``; ``posts`` give the gold entities by post id.

    >>> from kecpm.agents import KnowledgeResult
    >>> from kecpm.synthetic import synthetic_posts
    >>> post = synthetic_posts(1, seed=3)[0]
    >>> name = post.quintuples[0].head.name
    >>> result = KnowledgeResult(post_id=post.id, knowledge=[f"{name} is a name."], steps=[], accepted=False)
    >>> knowledge_quality([result], [post]).entity_mention_share > 0
    True
    """
    gold = {p.id: {e.name.lower() for q in p.quintuples for e in (q.head, q.tail)} for p in posts}
    judged = unsupported = accepted = critiqued = mentioned = entities = 0
    statements = words = 0
    for result in results:
        statements += len(result.knowledge)
        text = " ".join(result.knowledge)
        words += len(text.split())
        names = gold.get(result.post_id, set())
        entities += len(names)
        mentioned += sum(name in text.lower() for name in names)
        generated = next((s.output for s in result.steps if s.stage == "generate"), None)
        critique = next((s.output for s in result.steps if s.stage == "critique"), None)
        if critique is not None and generated is not None:
            critiqued += 1
            accepted += result.accepted
            verdicts = {c.index: c.verdict for c in critique.checks if c.index <= len(generated.statements)}
            judged += len(generated.statements)
            unsupported += sum(v == "unsupported" for v in verdicts.values())
    count = len(results)
    return QualitySignals(
        posts=count,
        unsupported_share=unsupported / judged if judged else None,
        accepted_share=accepted / critiqued if critiqued else None,
        statements=statements / count if count else 0.0,
        words=words / count if count else 0.0,
        entity_mention_share=mentioned / entities if entities else None,
    )
