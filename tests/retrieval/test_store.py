"""The embedded Chroma store: writing, selecting (weights, MMR, exclusion), and its clear errors."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding
from pydantic import ValidationError

from kecpm.answers import parse_answer
from kecpm.errors import DataError
from kecpm.records import Demonstration
from kecpm.retrieval import (
    DemonstrationStore,
    EmbeddingMismatchError,
    MiniLMEmbeddings,
    QueryError,
    SelectionConfig,
    StoreConfig,
    StoreError,
    demonstrations_from_posts,
)
from kecpm.retrieval.store import _mmr
from kecpm.synthetic import synthetic_posts

POSTS = synthetic_posts(42, seed=7)
DEMOS = demonstrations_from_posts(POSTS, source="synthetic")
QUERIES = synthetic_posts(8, seed=99, id_prefix="query")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, embeddings: MiniLMEmbeddings) -> DemonstrationStore:
    built = DemonstrationStore(tmp_path_factory.mktemp("store") / "demos", embeddings, create=True)
    built.add(DEMOS)
    return built


def demo(id: str, text: str, image: str, answer: str | None = None) -> Demonstration:
    quintuples = tuple(parse_answer(answer).quintuples) if answer else ()
    return Demonstration(id=id, text=text, image_description=image, quintuples=quintuples, answer=answer)


@pytest.fixture(scope="module")
def exact_top(embeddings: MiniLMEmbeddings):
    """Brute-force weighted cosine over DEMOS: ``(score, id)`` of the best ``k``."""
    texts = embeddings.encode([d.text for d in DEMOS])
    images = embeddings.encode([d.image_description for d in DEMOS])

    def top(text: str, image: str, weights: tuple[float, float], k: int) -> list[tuple[float, str]]:
        q_text, q_image = embeddings.encode([text, image])
        scores = weights[0] * texts @ q_text + weights[1] * images @ q_image
        return [(float(scores[i]), DEMOS[i].id) for i in np.argsort(-scores)[:k]]

    return top


def test_demonstrations_come_back_whole(store: DemonstrationStore) -> None:
    assert store.count() == 42
    assert store.get([DEMOS[5].id, "absent", DEMOS[0].id]) == [DEMOS[5], DEMOS[0]]


def test_selection_is_exact_weighted_cosine(store: DemonstrationStore, exact_top) -> None:
    for weights in ((0.5, 0.5), (0.8, 0.2), (1.0, 0.0)):
        selection = SelectionConfig(k=3, text_weight=weights[0], image_weight=weights[1])
        for query in QUERIES:
            hits = store.search(query, selection=selection)
            expected = exact_top(query.text, query.image_description, weights, 3)
            # Scores match the brute force; ids too, up to ties (synthetic captions repeat).
            np.testing.assert_allclose([h.score for h in hits], [s for s, _ in expected], atol=1e-4)
            for hit in hits:
                assert hit.score == pytest.approx(
                    weights[0] * hit.text_similarity + weights[1] * (hit.image_similarity or 0.0), abs=1e-6
                )
            assert hits[0].demonstration.id == expected[0][1] or hits[0].score == pytest.approx(expected[1][0])


def test_a_post_excludes_itself_unless_told(store: DemonstrationStore) -> None:
    post = POSTS[3]
    assert post.id not in [d.id for d in store.select(post, k=5)]
    itself = store.search(post, k=1, exclude_self=False)[0]
    assert itself.demonstration.id == post.id
    assert itself.score == pytest.approx(1.0, abs=1e-4)
    others = store.select(post.text, caption=post.image_description, k=3, exclude_ids=[post.id, POSTS[4].id])
    assert not {post.id, POSTS[4].id} & {d.id for d in others}
    assert len(others) == 3


def test_weights_choose_between_text_and_image(tmp_path: Path, embeddings: MiniLMEmbeddings) -> None:
    store = DemonstrationStore(tmp_path / "s", embeddings, create=True)
    store.add(
        [
            demo("same-text", "Kasimir Dole signs for Harbor City FC", "a bowl of fruit on a kitchen table"),
            demo("same-image", "The council approved the new budget", "a football player holding a pink jersey"),
        ]
    )
    query = ("Kasimir Dole signs for Harbor City FC", "a football player holding a pink jersey")
    text_only = store.search(query[0], caption=query[1], selection=SelectionConfig(text_weight=1, image_weight=0))
    image_only = store.search(query[0], caption=query[1], selection=SelectionConfig(text_weight=0, image_weight=1))
    assert [h.demonstration.id for h in text_only] == ["same-text", "same-image"]
    assert [h.demonstration.id for h in image_only] == ["same-image", "same-text"]
    assert text_only[0].text_similarity == pytest.approx(1.0, abs=1e-4)
    assert image_only[0].image_similarity == pytest.approx(1.0, abs=1e-4)
    # Text only needs no caption; then there is no image similarity to report.
    bare = store.search(query[0], selection=SelectionConfig(image_weight=0))
    assert bare[0].demonstration.id == "same-text" and bare[0].image_similarity is None


def test_mmr_trades_a_near_duplicate_for_diversity(tmp_path: Path, embeddings: MiniLMEmbeddings) -> None:
    store = DemonstrationStore(tmp_path / "s", embeddings, create=True)
    store.add(
        [
            demo("copy-1", "Senator Vale visits Paris for climate talks", "a man at a podium"),
            demo("copy-2", "Senator Vale visits Paris for climate talks !", "a man at a podium"),
            demo("other", "President Orlan welcomes Senator Vale to the summit", "two men shaking hands"),
            demo("far", "Recipe: a quick tomato soup", "a bowl of soup"),
        ]
    )
    query = "Senator Vale arrives in Paris for climate talks"
    plain = store.select(query, caption="a man at a podium", k=2)
    diverse = store.select(query, caption="a man at a podium", selection=SelectionConfig(k=2, mmr=True, mmr_lambda=0.5))
    assert {d.id for d in plain} == {"copy-1", "copy-2"}
    assert diverse[0].id == plain[0].id
    assert diverse[1].id in {"other", "far"}
    # Near pure relevance, MMR is plain top-k again.
    assert (
        store.select(query, caption="a man at a podium", selection=SelectionConfig(k=2, mmr=True, mmr_lambda=1))
        == plain
    )


def test_mmr_greedy_choice() -> None:
    relevance = np.array([0.9, 0.85, 0.5, 0.1], dtype=np.float32)
    similarity = np.array(
        [[1, 0.95, 0.2, 0.0], [0.95, 1, 0.2, 0.0], [0.2, 0.2, 1, 0.0], [0.0, 0.0, 0.0, 1]], dtype=np.float32
    )
    assert _mmr(relevance, similarity, 3, 0.5) == [0, 2, 3]
    assert _mmr(relevance, similarity, 3, 1.0) == [0, 1, 2]
    assert _mmr(relevance, similarity, 9, 0.5) == [0, 2, 3, 1]


async def test_async_selection_matches_sync(store: DemonstrationStore) -> None:
    for query in QUERIES[:3]:
        assert await store.aselect(query, k=3) == store.select(query, k=3)
    assert await store.acount() == 42


def test_k_beyond_the_store_gives_what_there_is(store: DemonstrationStore) -> None:
    assert len(store.select(QUERIES[0], k=100)) == 42


def test_the_store_persists_and_records_its_model(store: DemonstrationStore, embeddings: MiniLMEmbeddings) -> None:
    reopened = DemonstrationStore(store.config, embeddings)
    assert reopened.count() == 42
    assert reopened.select(QUERIES[0], k=2) == store.select(QUERIES[0], k=2)
    with pytest.raises(EmbeddingMismatchError, match=r"built with sentence-transformers/all-MiniLM-L6-v2 \(384"):
        DemonstrationStore(store.config, DeterministicFakeEmbedding(size=384))


def test_chroma_never_embeds_by_itself(tmp_path: Path, embeddings: MiniLMEmbeddings, no_network: list[object]) -> None:
    store = DemonstrationStore(tmp_path / "s", embeddings, create=True)
    store.add(DEMOS[:5])
    assert store.select(QUERIES[0], k=2)
    assert store.vectorstore.similarity_search("Ravi Quill", k=1)
    assert no_network == []
    # The guard does catch a download (Chroma's own embedding function would fetch a model).
    with pytest.raises(OSError, match="network access in a test"):
        socket.create_connection(("chroma-onnx-models.s3.amazonaws.com", 443), timeout=1)
    assert no_network == ["chroma-onnx-models.s3.amazonaws.com"]


def test_the_langchain_vectorstore_face(store: DemonstrationStore) -> None:
    text = POSTS[0].text
    docs = store.vectorstore.as_retriever(search_kwargs={"k": 3}).invoke(text)
    # One string stands for both the text and the image description.
    assert [d.id for d in docs] == [d.id for d in store.select(text, caption=text, k=3, exclude_self=False)]
    assert docs[0].page_content == store.get([docs[0].id])[0].text
    with pytest.raises(NotImplementedError, match=r"DemonstrationStore\.add"):
        store.vectorstore.add_texts(["a text"])


def test_bad_demonstrations_are_named_and_the_good_ones_kept(tmp_path: Path, embeddings: MiniLMEmbeddings) -> None:
    store = DemonstrationStore(tmp_path / "s", embeddings, create=True)
    batch = [
        demo("good-1", "Ann visits Oslo", "a woman on a bridge"),
        demo("blank", "   ", "a photo"),
        demo("good-1", "Ann visits Oslo again", "a bridge"),
        demo("good-2", "Cara joins Acme", "an office"),
    ]
    with pytest.raises(DataError) as caught:
        store.add(batch)
    assert {p.record for p in caught.value.problems} == {"blank", "good-1"}
    assert "empty text" in str(caught.value) and "the same id twice" in str(caught.value)
    assert store.count() == 0  # nothing written when the batch is refused
    report = store.add(batch, skip_invalid=True)
    assert report.added == ["good-1", "good-2"] and len(report.problems) == 2
    assert store.count() == 2


async def test_without_an_image_description_demonstrations_and_queries_go_by_text(
    tmp_path: Path, embeddings: MiniLMEmbeddings
) -> None:
    store = DemonstrationStore(tmp_path / "s", embeddings, create=True)
    report = await store.aadd(
        [
            demo("imaged", "The council approved the new budget", "a football player holding a pink jersey"),
            demo("bare", "Mira Holt signs with Vantor FC", ""),
            demo("other", "A recipe for tomato soup", "a bowl of soup"),
        ]
    )
    assert report.added == ["imaged", "bare", "other"] and report.text_only == ["bare"]
    (stored,) = store.get(["bare"])
    assert stored.image_description == ""
    # A query without an image description is ranked by text alone, whatever the weights say.
    hits = store.search("Mira Holt joins Vantor FC", selection=SelectionConfig(k=3))
    assert hits[0].demonstration.id == "bare"
    assert [h.score for h in hits] == [pytest.approx(h.text_similarity, abs=1e-6) for h in hits]
    assert all(h.image_similarity is None for h in hits)
    assert [h.demonstration.id for h in hits] == [
        h.demonstration.id
        for h in store.search("Mira Holt joins Vantor FC", selection=SelectionConfig(k=3, image_weight=0))
    ]
    # With an image description, a text-only demonstration counts its text (its image part is 0).
    mixed = {h.demonstration.id: h for h in store.search("Mira Holt joins Vantor FC", caption="a footballer", k=3)}
    assert mixed["bare"].image_similarity is None and mixed["imaged"].image_similarity is not None
    assert mixed["bare"].score == pytest.approx(0.5 * mixed["bare"].text_similarity, abs=1e-6)


def test_bad_queries_are_clear_errors(store: DemonstrationStore) -> None:
    with pytest.raises(QueryError, match="query text is empty"):
        store.select("  ", caption="a photo")
    with pytest.raises(ValidationError):
        store.select("Senator Vale in Paris", caption="a man", k=0)
    with pytest.raises(ValidationError, match="cannot both be 0"):
        SelectionConfig(text_weight=0, image_weight=0)


def test_bad_places_are_clear_errors(tmp_path: Path, embeddings: MiniLMEmbeddings) -> None:
    with pytest.raises(StoreError, match="no store here"):
        DemonstrationStore(tmp_path / "absent", embeddings)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    with pytest.raises(StoreError, match="not a Chroma store"):
        DemonstrationStore(tmp_path / "notes", embeddings, create=True)
    with pytest.raises(StoreError, match="a file, not a Chroma store"):
        DemonstrationStore(tmp_path / "notes" / "a.txt", embeddings, create=True)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "chroma.sqlite3").write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match="cannot open the Chroma store"):
        DemonstrationStore(tmp_path / "broken", embeddings)
    with pytest.raises(ValidationError, match="exactly one of path"):
        StoreConfig()


def test_an_empty_store_or_a_foreign_collection_is_a_clear_error(tmp_path: Path, embeddings: MiniLMEmbeddings) -> None:
    empty = DemonstrationStore(tmp_path / "s", embeddings, create=True)
    with pytest.raises(StoreError, match="holds no demonstrations"):
        empty.select("Senator Vale in Paris", caption="a man")
    with pytest.raises(StoreError, match="no collection 'other-name'"):
        DemonstrationStore(StoreConfig(path=tmp_path / "s", collection="other-name"), embeddings)
    empty._client.create_collection("foreign", embedding_function=None)
    with pytest.raises(StoreError, match="not built by kecpm"):
        DemonstrationStore(StoreConfig(path=tmp_path / "s", collection="foreign"), embeddings)


def test_locations_parse() -> None:
    server = StoreConfig.from_location("https://chroma.example:9000")
    assert (server.host, server.port, server.ssl, server.location) == (
        "chroma.example",
        9000,
        True,
        "https://chroma.example:9000",
    )
    assert StoreConfig.from_location("runs/demos").path == Path("runs/demos")
    assert "secret" not in repr(StoreConfig(host="h", headers={"Authorization": "secret"}))


async def test_any_langchain_embeddings_can_be_used(tmp_path: Path) -> None:
    fake = DeterministicFakeEmbedding(size=16)  # same text, same vector: enough to find a post by its own words
    store = DemonstrationStore(tmp_path / "s", fake, create=True)
    assert (store.model_id, store.dimension) == ("DeterministicFakeEmbedding", 16)
    await store.aadd(DEMOS[:10])
    store.add(DEMOS[10:20])
    target = POSTS[15]
    assert (await store.aselect(target, k=1, exclude_self=False))[0].id == target.id
    assert store.select(POSTS[4], k=1, exclude_self=False)[0].id == POSTS[4].id
    assert store.count() == 20
