from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from kecpm.extractor import ExtractionInput, SpanPairEnsemble, make_extraction_tool
from kecpm.records import Post


@pytest.fixture(scope="module")
def tool(trained_tiny):
    return make_extraction_tool(trained_tiny[0])


def _expected(model, text, image_description="", knowledge=()):
    post = Post(
        id="tool-input",
        text=text,
        image_descriptions=[image_description] if image_description else [],
        knowledge=list(knowledge),
    )
    return [q.surface() for q in model.predict([post])[0]]


def _surfaces(result):
    return [(q["head"], q["head_type"], q["tail"], q["tail_type"], q["relation"]) for q in result["quintuples"]]


def test_tool_schema_and_sync_call(tool, trained_tiny, synthetic_split):
    _, val = synthetic_split
    post = val[0]
    schema = tool.args
    assert set(schema) == {"text", "image_description", "knowledge"}
    result = json.loads(
        tool.invoke({"text": post.text, "image_description": post.image_description, "knowledge": post.knowledge})
    )
    assert _surfaces(result) == _expected(trained_tiny[0], post.text, post.image_description, post.knowledge)
    assert result["quintuples"], "at least one quintuple per post"


async def test_an_ensemble_is_a_tool_too(trained_tiny, synthetic_split):
    ensemble = SpanPairEnsemble([trained_tiny[0], trained_tiny[0]])
    post = synthetic_split[1][2]
    arguments = {"text": post.text, "knowledge": post.knowledge}
    result = json.loads(await make_extraction_tool(ensemble).ainvoke(arguments))
    assert _surfaces(result) == _expected(ensemble, post.text, knowledge=post.knowledge)
    assert result["quintuples"]


async def test_tool_async_call_matches_sync(tool, synthetic_split):
    post = synthetic_split[1][3]
    arguments = {"text": post.text, "knowledge": "one sentence passed as a string"}
    assert await tool.ainvoke(arguments) == tool.invoke(arguments)


async def test_a_tool_call_returns_content_and_artifact(tool, synthetic_split):
    from kecpm.extractor import ExtractionResult

    post = synthetic_split[1][4]
    call = {"name": tool.name, "args": {"text": post.text}, "id": "call_9", "type": "tool_call"}
    for message in (tool.invoke(call), await tool.ainvoke(call)):
        assert isinstance(message.artifact, ExtractionResult)
        assert json.loads(message.content) == message.artifact.model_dump(mode="json", exclude_none=True)


def test_tool_arguments_are_validated():
    with pytest.raises(ValidationError):
        ExtractionInput(text="")
    assert ExtractionInput(text="a b", knowledge="one fact").knowledge == ["one fact"]


async def test_an_agent_calls_the_tool(tool, trained_tiny, synthetic_split):
    """A scripted chat model decides to call the tool; the agent runs it and gets the quintuples."""
    from langchain.agents import create_agent
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    class ScriptedChatModel(GenericFakeChatModel):
        def bind_tools(self, tools, **kwargs):
            return self

    post = synthetic_split[1][5]
    call = {
        "name": "extract_quintuples",
        "args": {"text": post.text, "image_description": post.image_description, "knowledge": post.knowledge},
        "id": "call_1",
        "type": "tool_call",
    }
    model = ScriptedChatModel(
        messages=iter([AIMessage(content="", tool_calls=[call]), AIMessage(content="Found the quintuples.")])
    )
    agent = create_agent(model, tools=[tool], system_prompt="Extract quintuples with the tool.")
    state = await agent.ainvoke(
        {"messages": [HumanMessage(content=f"Extract from: {post.text}")]}, {"recursion_limit": 6}
    )
    tool_messages = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert len(tool_messages) == 1
    assert tool_messages[0].status != "error"
    result = json.loads(tool_messages[0].content)
    assert _surfaces(result) == _expected(trained_tiny[0], post.text, post.image_description, post.knowledge)
    assert state["messages"][-1].content == "Found the quintuples."
