"""Composing the method into a larger LangGraph workflow: kecpm's packaged graph (one node per stage,
retry policies, a checkpointer), paused after the knowledge node for a human to look at the knowledge,
resumed from the checkpoint (no LLM call is repeated), then extended with a node of your own that routes
posts mentioning a place. Also shows plain `|` composition of the pipeline Runnable.

    .venv/bin/python examples/langgraph_workflow.py runs/demo
"""

import asyncio
import sys
from pathlib import Path

from langchain_core.runnables import RunnableLambda
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END

from kecpm.pipeline import KECPMPipeline, PipelineConfig, PipelineState, build_graph, graph_builder


class PlacesState(PipelineState, total=False):
    places: list[str]


def places(state: PlacesState) -> PlacesState:
    """A node of your own after kecpm's: the places among the quintuples' entities."""
    found = {q["tail"] for q in state["quintuples"] if q["tail_type"] == "loc"}
    found |= {q["head"] for q in state["quintuples"] if q["head_type"] == "loc"}
    return {"places": sorted(found)}


async def main(run: Path) -> None:
    config = PipelineConfig(store=str(run / "store"), extractor=run / "model", knowledge_cache=run / "knowledge.sqlite")
    post = {"text": "Jonas Vale moved to Eastholm last spring", "image_description": "a man on a street"}
    async with KECPMPipeline(config) as pipeline:
        # 1. The packaged graph, paused after the knowledge node (a human-in-the-loop review point).
        graph = build_graph(pipeline, interrupt_after=["knowledge"])
        thread = {"configurable": {"thread_id": "jonas"}}
        paused = await graph.ainvoke({"post": post}, thread)
        print("knowledge to review:", paused["knowledge"]["knowledge"])
        done = await graph.ainvoke(None, thread)  # resumes at extract from the checkpoint
        print("quintuples:", done["quintuples"])

        # 2. The same stages with a node of your own: extend the uncompiled StateGraph.
        builder = graph_builder(pipeline, state_schema=PlacesState, finish=False)
        builder.add_node("places", places)
        builder.add_edge("extract", "places")
        builder.add_edge("places", END)
        extended = builder.compile(checkpointer=InMemorySaver())
        state = await extended.ainvoke({"post": post}, {"configurable": {"thread_id": "jonas-places"}})
        print("places:", state.get("places"))

        # 3. The pipeline is a Runnable, so `|` works too.
        relations = pipeline | RunnableLambda(lambda r: sorted({q.relation for q in r.quintuples}))
        print(await relations.ainvoke("Nora Lind and her husband Ivo Strand celebrate ten years of marriage"))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo")))
