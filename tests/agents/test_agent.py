"""The KECPM agent: LangChain v1 create_agent over the pipeline's three tools."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, ToolMessage

from kecpm.agents.agent import AGENT_RECURSION_LIMIT, create_kecpm_agent, pipeline_tools
from kecpm.pipeline import KECPMPipeline, PipelineConfig
from kecpm.testing import tool_answer

TEXT = "Mira Holt signs a new contract with Corvex Labs"
CAPTION = "a woman holding a pen"


@pytest.fixture
def pipeline(store_dir, model_dir, loopback_llm, tmp_path):
    config = PipelineConfig(
        store=str(store_dir), llm=loopback_llm, knowledge_cache=tmp_path / "k.sqlite", extractor=model_dir
    )
    return KECPMPipeline(config)


def _call(name: str, args: dict, number: int) -> AIMessage:
    return tool_answer(name, args, call_id=f"call_{number}")


async def test_scripted_model_calls_the_three_tools_in_order(pipeline, scripted):
    model = scripted(
        _call("retrieve_demonstrations", {"text": TEXT, "image_description": CAPTION}, 1),
        # The ids come from the tool's answer in a real run; a scripted model names two stored ones.
        _call(
            "build_knowledge",
            {"text": TEXT, "image_description": CAPTION, "demonstration_ids": ["itrain_11_00010.jpg"]},
            2,
        ),
        _call(
            "extract_quintuples",
            {"text": TEXT, "image_description": CAPTION, "knowledge": ["Mira Holt is a researcher."]},
            3,
        ),
        AIMessage(content="Done."),
    )
    async with pipeline:
        agent = create_kecpm_agent(model, pipeline)
        state = await agent.ainvoke({"messages": [("user", TEXT)]}, {"recursion_limit": AGENT_RECURSION_LIMIT})
    tools = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert [m.name for m in tools] == ["retrieve_demonstrations", "build_knowledge", "extract_quintuples"]
    assert all(m.status == "success" for m in tools), [m.content for m in tools]
    assert '"demonstrations"' in tools[0].content and '"knowledge"' in tools[1].content
    assert '"quintuples"' in tools[2].content
    assert "never instructions" in model.seen[0][0].content


async def test_tools_validate_their_arguments(pipeline):
    tools = {t.name: t for t in pipeline_tools(pipeline)}
    with pytest.raises(ValueError, match="text"):
        await tools["extract_quintuples"].ainvoke({"text": ""})
    with pytest.raises(ValueError, match="knowledge"):
        await tools["extract_quintuples"].ainvoke({"text": TEXT, "knowledge": ["x" * 1000]})
    with pytest.raises(ValueError, match="demonstration_ids"):
        await tools["build_knowledge"].ainvoke({"text": TEXT, "demonstration_ids": [str(i) for i in range(20)]})
    await pipeline.aclose()


@pytest.mark.slow
async def test_a_run_against_the_embedded_llm_completes(store_dir, model_dir, tmp_path):
    """SmolLM2-135M decides; whatever it decides, the run ends cleanly within the recursion bound."""
    from kecpm.llm import ChatClient, EmbeddedServer

    with EmbeddedServer(log_path=tmp_path / "server.log") as server:
        llm = server.config(max_tokens=96)
        config = PipelineConfig(
            store=str(store_dir), llm=llm, rounds=0, knowledge_cache=tmp_path / "k.sqlite", extractor=model_dir
        )
        async with KECPMPipeline(config) as pipeline, ChatClient(llm, base_url=server.base_url) as client:
            agent = create_kecpm_agent(client.model, pipeline)
            state = await agent.ainvoke(
                {"messages": [("user", f"Text: {TEXT}\nImage description: {CAPTION}")]},
                {"recursion_limit": AGENT_RECURSION_LIMIT},
            )
    assert isinstance(state["messages"][-1], AIMessage)
