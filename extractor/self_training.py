"""Self-training: a trained span-pair model's confident quintuples on unlabelled posts, as training posts.

The teacher decodes more strictly than it predicts (no quintuple forced on a post, a higher relation
threshold), and only the posts it finds something in are kept: a student then trains on them first
(``Extractor.fit(..., pseudo=...)``) and on the labelled posts after. Unlabelled text is a protocol of its
own: report such models apart from the labels-only ones, and never pseudo-label a split that is scored.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from ..records import Post
from .base import PREDICT_BATCH_SIZE
from .span_pair import SpanPairExtractor

__all__ = ["pseudo_label"]


def pseudo_label(
    teacher: SpanPairExtractor,
    posts: Sequence[Post],
    *,
    entity_threshold: float = 0.5,
    relation_threshold: float = 0.7,
    batch_size: int = PREDICT_BATCH_SIZE,
) -> list[Post]:
    """The posts in which ``teacher`` finds at least one quintuple at these thresholds, labelled with them
    (their own labels, if any, replaced); the teacher itself is left as it was.

    >>> pseudo = pseudo_label(load_extractor("runs/text_only"), unlabelled)  # doctest: +SKIP
    >>> student.fit(train, val, scorer=scorer, pseudo=pseudo)  # doctest: +SKIP
    """
    if not isinstance(teacher, SpanPairExtractor):
        raise TypeError(f"pseudo-labels need a span-pair teacher (its thresholds), not {type(teacher).__name__}")
    strict = copy.copy(teacher)  # shares the network; only the decoding differs
    strict.config = teacher.config.model_copy(
        update={"entity_threshold": entity_threshold, "relation_threshold": relation_threshold, "at_least_one": False}
    )
    predicted = strict.predict(posts, batch_size=batch_size)
    return [p.model_copy(update={"quintuples": q}) for p, q in zip(posts, predicted, strict=True) if q]
