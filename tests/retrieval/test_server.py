"""The store on a real Chroma server (``chroma run`` on loopback): the same selections as embedded,
and clear errors when the server is missing or drops."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from kecpm.retrieval import (
    DemonstrationStore,
    EmbeddingMismatchError,
    MiniLMEmbeddings,
    SelectionConfig,
    StoreConfig,
    StoreUnavailableError,
    demonstrations_from_posts,
)
from kecpm.synthetic import synthetic_posts

if TYPE_CHECKING:
    from conftest import ChromaServer

POSTS = synthetic_posts(42, seed=11)
DEMOS = demonstrations_from_posts(POSTS, source="synthetic")
QUERIES = synthetic_posts(6, seed=12, id_prefix="query")
SELECTIONS = [
    SelectionConfig(k=3),
    SelectionConfig(k=2, text_weight=0.9, image_weight=0.1),
    SelectionConfig(k=3, mmr=True, fetch_k=10, mmr_lambda=0.5),
]


def test_the_server_selects_what_the_embedded_store_selects(
    tmp_path: Path, chroma_server: ChromaServer, embeddings: MiniLMEmbeddings, no_network: list[object]
) -> None:
    embedded = DemonstrationStore(tmp_path / "embedded", embeddings, create=True)
    served = DemonstrationStore(
        StoreConfig.from_location(chroma_server.url, collection="same-selections"), embeddings, create=True
    )
    embedded.add(DEMOS)
    served.add(DEMOS)
    assert served.count() == embedded.count() == 42
    for selection in SELECTIONS:
        for query in QUERIES:
            local = embedded.search(query, selection=selection)
            remote = served.search(query, selection=selection)
            assert [h.demonstration for h in remote] == [h.demonstration for h in local]
            assert [h.score for h in remote] == pytest.approx([h.score for h in local], abs=1e-5)
    post = POSTS[0]
    assert post.id not in [d.id for d in served.select(post, k=5)]
    assert served.select(post, k=5) == embedded.select(post, k=5)
    assert no_network == []  # loopback only


async def test_async_selection_through_the_server(chroma_server: ChromaServer, embeddings: MiniLMEmbeddings) -> None:
    served = DemonstrationStore(
        StoreConfig.from_location(chroma_server.url, collection="async-one"), embeddings, create=True
    )
    await served.aadd(DEMOS[:10])
    assert await served.aselect(QUERIES[0], k=2) == served.select(QUERIES[0], k=2)


def test_reopening_on_the_server_checks_the_model(chroma_server: ChromaServer, embeddings: MiniLMEmbeddings) -> None:
    config = StoreConfig.from_location(chroma_server.url, collection="model-check")
    DemonstrationStore(config, embeddings, create=True).add(DEMOS[:3])
    assert DemonstrationStore(config, embeddings).count() == 3
    with pytest.raises(EmbeddingMismatchError, match="model-check"):
        DemonstrationStore(config, DeterministicFakeEmbedding(size=384))


def test_an_unreachable_server_is_a_clear_error(embeddings: MiniLMEmbeddings, unused_port: int) -> None:
    config = StoreConfig(host="127.0.0.1", port=unused_port, retry_attempts=2, retry_wait_s=0.01)
    with pytest.raises(StoreUnavailableError, match=r"http://127\.0\.0\.1:\d+: cannot reach the Chroma server"):
        DemonstrationStore(config, embeddings)


def test_a_server_that_drops_is_retried_then_a_clear_error(
    own_chroma_server: ChromaServer, embeddings: MiniLMEmbeddings
) -> None:
    config = StoreConfig.from_location(own_chroma_server.url, retry_attempts=3, retry_wait_s=0.01)
    store = DemonstrationStore(config, embeddings, create=True)
    store.add(DEMOS[:5])
    own_chroma_server.stop()
    with pytest.raises(StoreUnavailableError, match=r"querying failed after 3 attempts.*is the Chroma server running"):
        store.select(QUERIES[0], k=2)


def test_a_server_that_comes_back_during_the_retries_answers(
    own_chroma_server: ChromaServer, embeddings: MiniLMEmbeddings
) -> None:
    config = StoreConfig.from_location(own_chroma_server.url, retry_attempts=8, retry_wait_s=0.1)
    store = DemonstrationStore(config, embeddings, create=True)
    store.add(DEMOS[:5])
    expected = store.select(QUERIES[0], k=2)
    own_chroma_server.stop()
    restart = threading.Timer(0.3, own_chroma_server.start)
    restart.start()
    try:
        assert store.select(QUERIES[0], k=2) == expected
    finally:
        restart.join()
