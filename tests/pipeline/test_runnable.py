"""KECPMPipeline over the real stages: Chroma store, MiniLM extractor, LLM over HTTP (loopback)."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.runnables import RunnableLambda

from kecpm.pipeline import ImageDescriptionRequired, KECPMPipeline, PipelineConfig, PipelineResult
from kecpm.records import PostInput
from kecpm.retrieval import SelectionConfig

POST = {"text": "Mira Holt signs a new contract with Corvex Labs", "image_description": "a woman holding a pen"}


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


async def test_ainvoke_returns_quintuples_knowledge_trajectory_demonstrations(config, server):
    async with KECPMPipeline(config) as pipeline:
        result = await pipeline.ainvoke(POST)
    assert isinstance(result, PipelineResult)
    assert len(result.demonstrations) == 2
    assert result.knowledge is not None and result.knowledge.knowledge
    assert [s.stage for s in result.knowledge.steps][:2] == ["generate", "critique"]
    assert set(result.timings) == {"retrieve_demonstrations", "build_knowledge", "extract_quintuples"}
    assert result.usage.calls == server.stats()["completions"] >= 2
    assert all(q.relation for q in result.quintuples)


async def test_a_rerun_is_answered_from_the_cache(config, server):
    async with KECPMPipeline(config) as pipeline:
        first = await pipeline.ainvoke(POST)
        calls = server.stats()["completions"]
        second = await pipeline.ainvoke(POST)
    assert server.stats()["completions"] == calls
    assert second.knowledge.knowledge == first.knowledge.knowledge
    assert second.usage.calls == 0 and second.usage.cached == len(first.knowledge.steps)


async def test_abatch_keeps_order_and_composes_with_pipe(config):
    posts = [
        {"text": f"Jonas Vale moved to Eastholm in {year}", "image_description": "a man on a street"}
        for year in (2001, 2002, 2003)
    ]
    async with KECPMPipeline(config) as pipeline:
        results = await pipeline.abatch(posts, config={"max_concurrency": 2})
        assert [r.text for r in results] == [p["text"] for p in posts]
        counted = await (pipeline | RunnableLambda(lambda r: (r.post_id, len(r.quintuples)))).ainvoke(posts[0])
    assert counted[0] == results[0].post_id


async def test_concurrent_calls_on_one_loop_share_one_knowledge_builder(config):
    # Each builder opens the call cache: two made at once raced on the new file (CI saw "database is
    # locked") and the second leaked its clients.
    async with KECPMPipeline(config) as pipeline:
        builders = await asyncio.gather(*(pipeline._builder() for _ in range(4)))
        assert all(b is builders[0] for b in builders)


async def test_astream_events_show_the_three_steps(config):
    names = []
    async with KECPMPipeline(config) as pipeline:
        async for event in pipeline.astream_events(POST, version="v2"):
            if event["event"] == "on_chain_end":
                names.append(event["name"])
    for step in ("retrieve", "knowledge", "generate", "critique", "revise", "extract", "kecpm_pipeline"):
        assert step in names
    assert names[-1] == "kecpm_pipeline"


def test_sync_invoke_and_batch_work_outside_and_inside_a_loop(config):
    with KECPMPipeline(config) as pipeline:
        assert pipeline.invoke(PostInput(**POST)).text == POST["text"]
        assert len(pipeline.batch([POST, POST])) == 2

        async def inside() -> PipelineResult:
            return pipeline.invoke(POST)  # a blocking call from a loop still works (own loop thread)

        assert asyncio.run(inside()).text == POST["text"]


async def test_image_without_description_needs_a_vision_model(config, server, tmp_path):
    from PIL import Image

    image = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), "red").save(image)
    async with KECPMPipeline(config) as pipeline:
        with pytest.raises(ImageDescriptionRequired, match="has an image but no description"):
            await pipeline.ainvoke({"text": POST["text"], "image_path": image})
    vision = config.model_copy(update={"llm": config.llm.model_copy(update={"vision": True})})
    async with KECPMPipeline(vision) as pipeline:
        result = await pipeline.ainvoke({"text": POST["text"], "image_bytes": image.read_bytes()})
        calls = server.stats()["completions"]
        again = await pipeline.ainvoke({"text": POST["text"], "image_bytes": image.read_bytes()})
    assert result.image_description
    # The description went through the cache too: the same image and post, no new call at all.
    assert again.image_description == result.image_description and server.stats()["completions"] == calls


async def test_text_only_post_ranks_demonstrations_by_text(config):
    async with KECPMPipeline(config) as pipeline:
        result = await pipeline.ainvoke("Nora Lind and her husband Ivo Strand celebrate")
    assert result.image_description == ""
    assert len(result.demonstrations) == 2


async def test_missing_extractor_is_a_clear_error(config):
    async with KECPMPipeline(config.model_copy(update={"extractor": None})) as pipeline:
        with pytest.raises(Exception, match="no extractor"):
            await pipeline.ainvoke(POST)
