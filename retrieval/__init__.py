"""Demonstration retrieval: offline embeddings, a Chroma store of labelled demonstrations, selection.

>>> from kecpm.retrieval import DemonstrationStore, load_pool
>>> store = DemonstrationStore("runs/demos", create=True)  # doctest: +SKIP
>>> store.add(load_pool("human"))  # doctest: +SKIP
>>> demos = await store.aselect(post, k=2)  # doctest: +SKIP
"""

from __future__ import annotations

from .config import SelectionConfig, StoreConfig
from .embeddings import MINILM_MODEL_ID, MiniLMEmbeddings, default_embeddings, describe_embeddings
from .errors import EmbeddingMismatchError, QueryError, RetrievalError, StoreError, StoreUnavailableError
from .pools import (
    HUMAN_POOL_FILE,
    demonstration_id,
    demonstrations_from_posts,
    human_pool,
    load_pool,
    parse_prompt_demonstrations,
    read_human_demonstrations,
)
from .retriever import DemonstrationRetriever
from .selector import DemonstrationExampleSelector, demonstration_example
from .store import AddReport, DemonstrationStore, ScoredDemonstration

__all__ = [
    "HUMAN_POOL_FILE",
    "MINILM_MODEL_ID",
    "AddReport",
    "DemonstrationExampleSelector",
    "DemonstrationRetriever",
    "DemonstrationStore",
    "EmbeddingMismatchError",
    "MiniLMEmbeddings",
    "QueryError",
    "RetrievalError",
    "ScoredDemonstration",
    "SelectionConfig",
    "StoreConfig",
    "StoreError",
    "StoreUnavailableError",
    "default_embeddings",
    "demonstration_example",
    "demonstration_id",
    "demonstrations_from_posts",
    "describe_embeddings",
    "human_pool",
    "load_pool",
    "parse_prompt_demonstrations",
    "read_human_demonstrations",
]
