"""Shared fixtures: synthetic posts and KECPM-format folders, and the real data when it exists."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

# Model hubs are unreachable: fail fast instead of retrying for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from kecpm.jmere import write_kecpm
from kecpm.paths import default_data_dir
from kecpm.records import Post
from kecpm.synthetic import synthetic_posts


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


@pytest.fixture
def scripted_chat():
    """``scripted_chat(answer, answer, ...)``: a fake chat model replaying AIMessages in order (tool calls
    included), recording every prompt in ``.seen``; for tests where a scripted model drives an agent."""
    from collections.abc import Sequence

    from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
    from langchain_core.messages import BaseMessage
    from pydantic import Field

    class ScriptedChatModel(FakeMessagesListChatModel):
        seen: list[list[BaseMessage]] = Field(default_factory=list)

        def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
            return self

        def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
            self.seen.append(list(messages))
            return super()._generate(messages, *args, **kwargs)

    return lambda *answers: ScriptedChatModel(responses=list(answers), seen=[])
