"""kecpm inside larger workflows, against the loopback server: the sync API inside a running event loop
(a notebook), a LangChain tracer over one pipeline run, per-call configuration, astream, and the
LangGraph graph interrupted after the knowledge node and resumed from its checkpointer."""

from __future__ import annotations

import asyncio
import json

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tracers.base import BaseTracer

from kecpm.agents import AGENT_RECURSION_LIMIT, KnowledgeBuilder, KnowledgeChain, KnowledgeResult, create_kecpm_agent
from kecpm.aio import run_sync
from kecpm.llm import ChatClient
from kecpm.pipeline import KECPMPipeline, PipelineConfig, PipelineResult, build_graph
from kecpm.records import Post
from kecpm.retrieval import SelectionConfig
from kecpm.testing import ScriptedChatModel, tool_answer

TEXT = "Mira Holt signs a new contract with Corvex Labs"
POST = {"text": TEXT, "image_description": "a woman holding a pen"}


@pytest.fixture
def config(store_dir, model_dir, loopback_llm, tmp_path) -> PipelineConfig:
    return PipelineConfig(
        store=str(store_dir),
        selection=SelectionConfig(k=2),
        llm=loopback_llm,
        rounds=1,
        knowledge_cache=tmp_path / "knowledge.sqlite",
        extractor=model_dir,
    )


class Collector(BaseTracer):
    """Every run the callbacks report, parents and children."""

    def __init__(self) -> None:
        super().__init__()
        self.runs = []

    def _start_trace(self, run) -> None:
        super()._start_trace(run)
        self.runs.append(run)

    def _persist_run(self, run) -> None:
        pass

    def named(self, name: str) -> list:
        return [run for run in self.runs if run.name == name]


def test_the_sync_api_works_inside_a_running_loop(config, loopback_llm, posts: list[Post], server, tmp_path):
    """What a notebook cell does: sync calls while an event loop runs in the same thread."""

    async def cell() -> dict:
        asyncio.get_running_loop()  # a loop runs here, as in Jupyter
        client = ChatClient(loopback_llm)
        chain = KnowledgeChain(client.model, rounds=1)
        chained = chain.invoke(posts[0])
        runnable = chain.as_runnable().invoke({"post": posts[1]})
        run_sync(client.aclose(), persistent=True)
        built = KnowledgeBuilder(loopback_llm, cache=tmp_path / "b.sqlite", progress=False).build(posts[:3])
        pipeline = KECPMPipeline(config)
        result = pipeline.invoke(POST)
        model = ScriptedChatModel.replaying(
            tool_answer("retrieve_demonstrations", {"text": TEXT}, call_id="c1"),
            tool_answer("build_knowledge", {"text": TEXT}, call_id="c2"),
            tool_answer("extract_quintuples", {"text": TEXT, "knowledge": ["Mira Holt is a singer."]}, call_id="c3"),
            tool_answer("AgentAnswer", {"quintuples": [], "note": "done"}, call_id="c4"),
        )
        agent = create_kecpm_agent(model, pipeline)
        state = agent.invoke({"messages": [("user", TEXT)]}, {"recursion_limit": AGENT_RECURSION_LIMIT})
        pipeline.close()
        return {"chain": chained, "runnable": runnable, "built": built, "pipeline": result, "agent": state}

    got = asyncio.run(cell())
    assert isinstance(got["chain"], KnowledgeResult) and got["chain"].knowledge
    assert isinstance(got["runnable"], KnowledgeResult) and got["runnable"].post_id == posts[1].id
    assert got["built"].succeeded == 3
    assert isinstance(got["pipeline"], PipelineResult) and got["pipeline"].knowledge.knowledge
    tools = [m for m in got["agent"]["messages"] if isinstance(m, ToolMessage)]
    assert [m.status for m in tools[:3]] == ["success"] * 3, [m.content for m in tools]
    assert isinstance(tools[1].artifact, KnowledgeResult)  # content_and_artifact: the objects travel too
    assert json.loads(tools[1].content)["knowledge"] == list(tools[1].artifact.knowledge)
    assert got["agent"]["structured_response"].note == "done"


async def test_a_tracer_sees_every_stage_with_its_metadata(config, server):
    tracer = Collector()
    async with KECPMPipeline(config) as pipeline:
        result = await pipeline.ainvoke(POST, {"callbacks": [tracer]})
        again = Collector()
        await pipeline.ainvoke(POST, {"callbacks": [again]})
    names = {run.name for run in tracer.runs}
    assert {"kecpm_pipeline", "retrieve", "knowledge", "generate", "critique", "revise", "extract"} <= names
    (pipeline_run,) = tracer.named("kecpm_pipeline")
    (knowledge_run,) = tracer.named("knowledge")
    for stage in ("generate", "critique", "revise"):
        (run,) = tracer.named(stage)
        meta = run.extra["metadata"]
        assert meta["template"] == f"{stage}@v1" and meta["post_id"] == result.post_id
        assert meta["cached"] is False and meta["stage"] == stage and meta["model"] == "loopback"
        assert {"kecpm", stage} <= set(run.tags)
        assert run.parent_run_id == knowledge_run.id and run.trace_id == pipeline_run.id
        # the model call is a child of its stage: generate and revise no longer trace alike
        assert any(child.parent_run_id == run.id for child in tracer.runs)
        (cached,) = again.named(stage)
        assert cached.extra["metadata"]["cached"] is True
    for step in ("retrieve", "extract"):
        assert tracer.named(step)[0].extra["metadata"]["post_id"] == result.post_id


async def test_per_call_configuration_and_astream(config, server):
    async with KECPMPipeline(config) as pipeline:
        chunks = [chunk async for chunk in pipeline.astream(POST, {"configurable": {"k": 1, "rounds": 0}})]
        assert [list(chunk) for chunk in chunks] == [["demonstrations"], ["knowledge"], ["quintuples", "result"]]
        assert len(chunks[0]["demonstrations"]) == 1
        assert [s.stage for s in chunks[1]["knowledge"].steps] == ["generate"]
        merged = chunks[0] + chunks[1] + chunks[2]
        assert merged["result"].knowledge == merged["knowledge"]
        default = await pipeline.ainvoke(POST)
        assert len(default.demonstrations) == 2 and len(default.knowledge.steps) == 3
    assert {spec.id for spec in pipeline.config_specs} == {"k", "rounds", "templates", "model"}


async def test_knowledge_runnable_configurable_fields(loopback_llm, posts, server):
    from langchain_core.runnables import ConfigurableField

    async with ChatClient(loopback_llm) as client:
        runnable = KnowledgeChain(client.model, rounds=1).as_runnable()
        tuned = runnable.configurable_fields(rounds=ConfigurableField(id="rounds"))
        short = await tuned.ainvoke({"post": posts[0]}, {"configurable": {"rounds": 0}})
        full = await tuned.ainvoke({"post": posts[0]})
    assert [s.stage for s in short.steps] == ["generate"]
    assert [s.stage for s in full.steps] == ["generate", "critique", "revise"]


async def test_the_graph_resumes_after_an_interrupt_without_a_new_llm_call(config, server):
    # No knowledge cache: only the checkpointer can spare the knowledge node's calls on resume.
    config = config.model_copy(update={"knowledge_cache": None})
    thread = {"configurable": {"thread_id": "post-1"}}
    async with KECPMPipeline(config) as pipeline:
        graph = build_graph(pipeline, interrupt_after=["knowledge"])
        paused = await graph.ainvoke({"post": POST}, thread)
        snapshot = await graph.aget_state(thread)
        assert snapshot.next == ("extract",)
        assert paused["knowledge"]["knowledge"] and "quintuples" not in paused
        calls = server.stats()["completions"]
        assert calls == 3
        # A new graph object over the same checkpointer: a process that picks the thread up again.
        resumed_graph = build_graph(pipeline, checkpointer=graph.checkpointer)
        done = await resumed_graph.ainvoke(None, thread)
    assert server.stats()["completions"] == calls
    assert isinstance(done["quintuples"], list) and done["knowledge"] == paused["knowledge"]
    assert [d["id"] for d in done["demonstrations"]] == [d["id"] for d in paused["demonstrations"]]


def test_the_graph_runs_sync_extends_and_has_retry_policies(config, server):
    from langgraph.graph import END

    from kecpm.llm import LLMCallError
    from kecpm.pipeline import PipelineState, graph_builder
    from kecpm.pipeline.graph import default_retry_policies, transient

    class Counted(PipelineState, total=False):
        count: int

    with KECPMPipeline(config) as pipeline:
        done = build_graph(pipeline, checkpointer=False).invoke({"post": TEXT})
        builder = graph_builder(pipeline, state_schema=Counted, finish=False)
        builder.add_node("count", lambda state: {"count": len(state["quintuples"])})
        builder.add_edge("extract", "count")
        builder.add_edge("count", END)
        extended = builder.compile().invoke({"post": TEXT})
    assert done["knowledge"]["knowledge"] and "quintuples" in done
    assert extended["count"] == len(extended["quintuples"])
    policies = default_retry_policies()
    assert policies["extract"].max_attempts == 1 and policies["knowledge"].max_attempts == 2
    assert transient(LLMCallError("x", kind="timeout")) and not transient(
        LLMCallError("x", kind="auth", retryable=False)
    )


async def test_rate_limit_from_the_config(loopback_llm, server) -> None:
    limited = loopback_llm.model_copy(update={"requests_per_second": 5.0, "burst": 1})
    async with ChatClient(limited) as client, ChatClient(loopback_llm) as free:
        assert client.model.rate_limiter is not None and free.model.rate_limiter is None
        started = asyncio.get_running_loop().time()
        await asyncio.gather(*(client.model.ainvoke("hello") for _ in range(4)))
        elapsed = asyncio.get_running_loop().time() - started
    assert elapsed >= 0.5, elapsed  # 4 requests at 5 per second: at least 3 waits of 0.2 s
    assert "requests_per_second" not in limited.call_params()  # it does not change answers: not in cache keys


def test_close_closes_the_builders_of_stopped_loops(config, server):
    pipeline = KECPMPipeline(config)
    for _ in range(2):  # two event loops, each closed after its run: the builders stay behind
        asyncio.run(pipeline.ainvoke(POST))
    builders = list(pipeline._builders.values())
    assert len(builders) == 2
    pipeline.close()
    assert not pipeline._builders
    assert all(b.cache is None and b._client is None for b in builders)
