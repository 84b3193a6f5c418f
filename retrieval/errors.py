"""Errors of the retrieval stage: each says which store and what to do."""

from __future__ import annotations

from ..errors import KecpmError

__all__ = ["EmbeddingMismatchError", "QueryError", "RetrievalError", "StoreError", "StoreUnavailableError"]


class RetrievalError(KecpmError):
    """Base class of the retrieval stage's errors."""


class QueryError(RetrievalError, ValueError):
    """A query that cannot be answered as asked (empty text, no image description to weigh...)."""


class StoreError(RetrievalError):
    """The store cannot be opened or used as asked (not a Chroma store, no collection, empty...)."""


class EmbeddingMismatchError(StoreError):
    """The store was built with another embedding model (or dimension) than the one it was opened with."""


class StoreUnavailableError(StoreError):
    """The Chroma server cannot be reached, or stopped answering and did not come back within the retries."""
