"""Composing the pipeline into a larger workflow: a LangGraph graph that extracts quintuples, then
routes posts that mention a place to a second step. Also shows plain `|` composition.

    .venv/bin/python examples/langgraph_workflow.py runs/demo
"""

import asyncio
import sys
from pathlib import Path
from typing import TypedDict

from langchain_core.runnables import RunnableLambda
from langgraph.graph import END, START, StateGraph

from kecpm.pipeline import KECPMPipeline, PipelineConfig, PipelineResult


class State(TypedDict, total=False):
    text: str
    image_description: str
    result: PipelineResult
    places: list[str]


def build_graph(pipeline: KECPMPipeline):
    async def extract(state: State) -> State:
        result = await pipeline.ainvoke({"text": state["text"], "image_description": state.get("image_description")})
        return {"result": result}

    def has_place(state: State) -> str:
        return "places" if any("loc" in (q.head_type, q.tail_type) for q in state["result"].quintuples) else END

    def places(state: State) -> State:
        found = {q.tail for q in state["result"].quintuples if q.tail_type == "loc"}
        found |= {q.head for q in state["result"].quintuples if q.head_type == "loc"}
        return {"places": sorted(found)}

    graph = StateGraph(State)
    graph.add_node("extract", extract)
    graph.add_node("places", places)
    graph.add_edge(START, "extract")
    graph.add_conditional_edges("extract", has_place, ["places", END])
    graph.add_edge("places", END)
    return graph.compile()


async def main(run: Path) -> None:
    config = PipelineConfig(store=str(run / "store"), extractor=run / "model", knowledge_cache=run / "knowledge.sqlite")
    async with KECPMPipeline(config) as pipeline:
        state = await build_graph(pipeline).ainvoke(
            {"text": "Jonas Vale moved to Eastholm last spring", "image_description": "a man on a street"}
        )
        print(state.get("places"), [q.model_dump() for q in state["result"].quintuples])
        # The pipeline is a Runnable, so `|` works too.
        relations = pipeline | RunnableLambda(lambda r: sorted({q.relation for q in r.quintuples}))
        print(await relations.ainvoke("Nora Lind and her husband Ivo Strand celebrate ten years of marriage"))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo")))
