"""Fixtures for cross-stage tests: a real demonstration store, a real (briefly) trained extractor,
and the loopback OpenAI-compatible server standing in for the LLM."""

from __future__ import annotations

from pathlib import Path

import pytest

from kecpm.llm import LLMConfig
from kecpm.records import Demonstration, Post
from kecpm.synthetic import synthetic_posts


@pytest.fixture(scope="session")
def train_posts() -> list[Post]:
    return synthetic_posts(21, seed=11, id_prefix="itrain")


@pytest.fixture(scope="session")
def store_dir(tmp_path_factory, train_posts) -> Path:
    from kecpm.retrieval import DemonstrationStore

    folder = tmp_path_factory.mktemp("store")
    store = DemonstrationStore(str(folder), create=True)
    store.add([Demonstration.from_post(p, source="train") for p in train_posts])
    return folder


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, train_posts) -> Path:
    """The default span-pair extractor (MiniLM), trained for one epoch: real, small, fast."""
    from kecpm.eval import make_scorer
    from kecpm.extractor import SpanPairExtractor, TrainConfig

    folder = tmp_path_factory.mktemp("model")
    model = SpanPairExtractor()
    model.fit(train_posts, train_posts[:7], scorer=make_scorer(), config=TrainConfig(epochs=1, seed=0))
    model.save(folder)
    return folder


@pytest.fixture
def loopback_llm(server) -> LLMConfig:
    """An LLMConfig for the loopback server (reset for each test)."""
    return LLMConfig(base_url=server.base_url, model="loopback", max_tokens_param="max_tokens")
