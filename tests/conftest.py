"""Shared fixtures: synthetic posts and KECPM-format folders, the real data when it exists, the loopback
LLM server, and for cross-stage tests a real demonstration store and a real (briefly) trained extractor."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Model hubs are unreachable: fail fast instead of retrying for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from kecpm.llm import LLMConfig
from kecpm.paths import default_data_dir
from kecpm.post_files import write_kecpm
from kecpm.records import Demonstration, Post
from kecpm.synthetic import synthetic_posts
from kecpm.testing import LoopbackServer, ScriptedChatModel, tool_answer


@pytest.fixture
def posts() -> list[Post]:
    """42 valid synthetic posts: every relation twice, with captions."""
    return synthetic_posts(42, seed=7)


@pytest.fixture
def split_dir(tmp_path: Path) -> Path:
    """A KECPM seed folder of synthetic data: train/val arrays, captions, knowledge (JSON Lines)."""
    folder = tmp_path / "seed_0"
    for split, seed, n in (("train", 1, 42), ("val", 2, 21)):
        data = synthetic_posts(n, seed=seed, id_prefix=split)
        data = [p.model_copy(update={"knowledge": [f"{p.quintuples[0].head.name} is well known."]}) for p in data]
        write_kecpm(data, folder / f"{split}.json")
        write_kecpm(data, folder / f"{split}_ofa_image_caption.json")
        write_kecpm(data, folder / f"{split}_ofa_knowledge.json")
    return folder


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real data folder; the test is skipped, with the reason, when it is absent."""
    found = default_data_dir()
    if found is None or not (found / "jmere" / "few_shot").is_dir():
        pytest.skip("real data not found: set KECPM_DATA or place it at ../shared/data")
    return found


@pytest.fixture(name="tool_answer")
def tool_answer_fixture():
    """``tool_answer(name, arguments)`` -> an AIMessage calling that function (a str: broken JSON)."""
    return tool_answer


@pytest.fixture
def scripted():
    """A factory: ``scripted(answer, answer, ...)`` -> a ScriptedChatModel replaying them."""
    return ScriptedChatModel.replaying


def _knowledge_build_args(data: Path, out: Path, server: LoopbackServer, *extra: str) -> list[str]:
    return [
        "knowledge", "build", "--data", str(data), "--out", str(out),
        "--llm", server.base_url, "--model", "loopback", "--no-progress", *extra,
    ]  # fmt: skip


@pytest.fixture
def knowledge_build_args():
    """``knowledge_build_args(data, out, server, *extra)`` -> the arguments of ``kecpm knowledge build``
    against the loopback server (after ``kecpm``)."""
    return _knowledge_build_args


@pytest.fixture(scope="module")
def loopback() -> Iterator[LoopbackServer]:
    """A loopback OpenAI-compatible server in a thread, shared by a module's tests (reset per test)."""
    with LoopbackServer(latency=0.01, retry_after=0.2, hang=3.0) as server:
        yield server


@pytest.fixture
def server(loopback: LoopbackServer) -> LoopbackServer:
    loopback.configure(latency=0.01, faults={}, script=[], accept=False, api_key=None, retry_after=0.2, hang=3.0)
    loopback.reset()
    return loopback


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
