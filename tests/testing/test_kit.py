"""The test kit users' own tests may import: the loopback server (in a thread and as
``python -m kecpm.testing.loopback``) and the fakes."""

from __future__ import annotations

from kecpm.agents import Knowledge, KnowledgeChain
from kecpm.llm import ChatClient, LLMConfig
from kecpm.records import Post
from kecpm.testing import LoopbackServer, ScriptedChatModel, example_from_schema, tool_answer

POST = Post(id="kit", text="Mira Holt visits Port Avery", image_descriptions=["a woman on a pier"])


async def test_the_loopback_server_runs_as_its_own_process_and_answers_schema_valid_calls() -> None:
    # process=True starts `python -m kecpm.testing.loopback`, the command the README gives
    async with LoopbackServer(process=True, latency=0.0) as server:
        config = LLMConfig(base_url=server.base_url, model="loopback", max_tokens_param="max_tokens")
        async with ChatClient(config) as client:
            result = await KnowledgeChain(client.model, rounds=0).ainvoke(POST)
        stats = server.stats()
    Knowledge(statements=result.knowledge)
    assert "Mira Holt" in result.knowledge[0]
    assert stats["completions"] == 1 and stats["tools"] == {"Knowledge": 1}


def test_examples_fit_their_schema() -> None:
    Knowledge.model_validate(example_from_schema(Knowledge.model_json_schema(), subject="Ann"))


async def test_the_scripted_model_replays_tool_answers_and_records_prompts() -> None:
    model = ScriptedChatModel.replaying(tool_answer("Knowledge", {"statements": ["Mira Holt is a singer."]}))
    result = await KnowledgeChain(model, rounds=0).ainvoke(POST)
    assert result.knowledge == ["Mira Holt is a singer."]
    assert result.steps[0].usage.input_tokens == 100
    (prompt,) = model.seen
    assert "Text: Mira Holt visits Port Avery" in prompt[-1].text
    broken = tool_answer("Knowledge", "{not json")
    assert broken.invalid_tool_calls and not broken.tool_calls
