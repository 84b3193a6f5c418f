"""Swapping in a remote OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp server, Ollama) for the
embedded SmolLM2. The key is read from the environment variable you name, never from a file:

    export OPENAI_API_KEY=...            # or your server's key
    .venv/bin/python examples/remote_endpoint.py runs/demo https://api.openai.com/v1 gpt-4o-mini

The same settings in a config file, for `kecpm run --config pipeline.toml`:

    [llm]
    base_url = "https://api.openai.com/v1"
    model = "gpt-4o-mini"
    api_key_env = "OPENAI_API_KEY"
    vision = true            # send post images to a vision model (and caption images that lack one)
"""

import asyncio
import sys
from pathlib import Path

from kecpm.llm import LLMConfig
from kecpm.pipeline import KECPMPipeline, PipelineConfig


async def main(run: Path, base_url: str, model: str) -> None:
    llm = LLMConfig(base_url=base_url, model=model, api_key_env="OPENAI_API_KEY", input_price=0.15, output_price=0.6)
    config = PipelineConfig(
        store=str(run / "store"), extractor=run / "model", knowledge_cache=run / "remote.sqlite", llm=llm
    )
    async with KECPMPipeline(config) as pipeline:
        result = await pipeline.ainvoke({"text": "Alva Brenner wins the Golden Reel for the second time"})
    print(result.knowledge.knowledge, f"cost ${result.usage.cost:.5f}")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3]))
