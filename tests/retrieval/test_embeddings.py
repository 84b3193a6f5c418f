"""The offline MiniLM embeddings, and the bookkeeping for any LangChain embeddings."""

from __future__ import annotations

import os

import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from kecpm.retrieval import MINILM_MODEL_ID, MiniLMEmbeddings, describe_embeddings
from kecpm.retrieval.embeddings import encode_texts, unit_rows

SENTENCES = [
    "Mara and Theo are engaged",
    "Mara Quist is going to marry Theo Brandt",
    "The stock market fell sharply on Monday",
    "x",
    "A much longer sentence about a football club that signed a new striker from a rival club this week",
]


def test_the_hub_is_offline_for_the_whole_suite() -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_vectors_are_unit_length_and_384_wide(embeddings: MiniLMEmbeddings, no_network: list[object]) -> None:
    vectors = np.asarray(embeddings.embed_documents(SENTENCES))
    assert vectors.shape == (5, 384) == (len(SENTENCES), embeddings.dimension)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert no_network == []


def test_batching_and_length_sorting_keep_each_text_with_its_vector(embeddings: MiniLMEmbeddings) -> None:
    batched = embeddings.encode(SENTENCES)
    one_by_one = np.stack([np.asarray(embeddings.embed_query(s)) for s in SENTENCES])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


def test_similar_sentences_are_closer(embeddings: MiniLMEmbeddings) -> None:
    v = embeddings.encode(SENTENCES[:3])
    assert v[0] @ v[1] > 0.5 > v[0] @ v[2]


async def test_async_variants_give_the_same_vectors(embeddings: MiniLMEmbeddings) -> None:
    assert np.allclose(await embeddings.aembed_query(SENTENCES[0]), embeddings.embed_query(SENTENCES[0]), atol=1e-6)
    assert np.allclose(await embeddings.aembed_documents(SENTENCES[:2]), embeddings.embed_documents(SENTENCES[:2]))


def test_describe_names_the_model_and_its_dimension(embeddings: MiniLMEmbeddings) -> None:
    assert describe_embeddings(embeddings) == (MINILM_MODEL_ID, 384)
    assert describe_embeddings(DeterministicFakeEmbedding(size=12)) == ("DeterministicFakeEmbedding", 12)


def test_other_embeddings_are_normalised() -> None:
    vectors = encode_texts(DeterministicFakeEmbedding(size=8), ["a", "b"], query=True)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert np.all(unit_rows([[0.0, 0.0]]) == 0)


def test_a_folder_without_a_model_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not a transformers model folder"):
        MiniLMEmbeddings(tmp_path)
