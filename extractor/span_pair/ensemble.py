"""Several trained span-pair models predicting as one, by averaging their probabilities.

Each member reads a post through its own inputs (one may read the text alone, another the text with the
image description and the knowledge); the members' span probabilities are averaged before the entity
threshold picks the candidate spans, and their relation probabilities of those candidates before the
pair choice (:func:`.model.score_posts`). A member with a ``knowledge_free_weight`` brings both its
readings, with and without knowledge, within its share. Decoding is the first member's unless a config
is given.
Predict-only: train and save each member as usual, then put the loaded members together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from ...records import Post, Quintuple
from ..base import PREDICT_BATCH_SIZE
from .config import SpanPairConfig
from .decoding import merge_schemas
from .model import SpanPairExtractor, decode_scored, score_posts

__all__ = ["SpanPairEnsemble"]


class SpanPairEnsemble:
    """Span-pair models whose probabilities are averaged at prediction.

    >>> text = SpanPairExtractor.from_pretrained("runs/only_text")  # doctest: +SKIP
    >>> know = SpanPairExtractor.from_pretrained("runs/imagecap_know")  # doctest: +SKIP
    >>> SpanPairEnsemble([text, know]).predict(val)  # doctest: +SKIP
    """

    def __init__(self, members: Sequence[SpanPairExtractor], *, config: SpanPairConfig | None = None) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        for k, member in enumerate(members):
            if not isinstance(member, SpanPairExtractor):
                raise TypeError(f"ensemble member {k} is a {type(member).__name__}, not a SpanPairExtractor")
            if member.network is None:
                raise ValueError(f"ensemble member {k} is not trained: fit or load it first")
        self.members = list(members)
        self.config = config or self.members[0].config
        # members trained on the same posts share one schema; the union keeps every member's type pairs
        self.schema = merge_schemas(*(member.schema for member in self.members))

    @classmethod
    def from_pretrained(
        cls, names_or_paths: Sequence[str | Path], *, config: SpanPairConfig | None = None
    ) -> SpanPairEnsemble:
        """The ensemble of the span-pair models saved at ``names_or_paths`` (folders or Hub ids)."""
        return cls([SpanPairExtractor.from_pretrained(name) for name in names_or_paths], config=config)

    def predict(
        self, posts: Sequence[Post], *, batch_size: int = PREDICT_BATCH_SIZE, progress: bool = False
    ) -> list[list[Quintuple]]:
        """The quintuples of each post, from the members' averaged probabilities (see the module)."""
        scored = score_posts(self.members, posts, self.config, self.schema, batch_size=batch_size, progress=progress)
        return decode_scored(posts, scored, self.config, rescreen=False)

    async def apredict(
        self, posts: Sequence[Post], *, batch_size: int = PREDICT_BATCH_SIZE, progress: bool = False
    ) -> list[list[Quintuple]]:
        """:meth:`predict` in a worker thread, so the event loop stays free while torch works."""
        return await asyncio.to_thread(self.predict, posts, batch_size=batch_size, progress=progress)
