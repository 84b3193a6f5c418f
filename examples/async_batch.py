"""Async batch use: knowledge and quintuples for many posts, at a bounded concurrency.

Run `kecpm demo --out runs/demo` first (it trains the extractor and builds the store), then:

    .venv/bin/python examples/async_batch.py runs/demo
"""

import asyncio
import sys
from pathlib import Path

from kecpm.pipeline import KECPMPipeline, PipelineConfig
from kecpm.post_files import read_kecpm


async def main(run: Path) -> None:
    config = PipelineConfig(
        store=str(run / "store"), extractor=run / "model", knowledge_cache=run / "knowledge.sqlite", rounds=1
    )
    posts = read_kecpm(run / "data" / "val_ofa_image_caption.json")[:5]
    async with KECPMPipeline(config) as pipeline:
        # abatch keeps input order; max_concurrency bounds the posts in flight.
        results = await pipeline.abatch(posts, config={"max_concurrency": 4})
    for post, result in zip(posts, results, strict=True):
        found = ", ".join(f"{q.head} -{q.relation}-> {q.tail}" for q in result.quintuples) or "(none)"
        print(f"{post.text}\n  knowledge: {result.knowledge.knowledge}\n  quintuples: {found}")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo")))
