"""How far the offline token counts of a dry run are from real tokenizers, on kecpm's own prompts.

For each post (the real val split of a seed when the data is there, else synthetic posts) the generate,
critique and revise requests are rendered exactly as a build would send them (``ChatOpenAI``'s request
body: messages + function schema; the demonstrations are the first K train posts, the knowledge and
critique a typical answer), then counted by

- the approximation kecpm uses for endpoints whose tokenizer is not here (``ApproximateTokenCounter``),
- SmolLM2's own vocabulary and chat template through llama-cpp-python (``LlamaTokenCounter``, exact for
  the embedded server, which puts the messages but not the schema into the prompt),
- optionally OpenAI's o200k_base (GPT-4o family), from the npm package gpt-tokenizer (``--o200k DIR``, a
  folder where ``npm install gpt-tokenizer`` was run; node must be on PATH): messages counted the way
  OpenAI's cookbook does (3 per message + role + content, + 3), the schema as its JSON text (OpenAI renders
  functions in a shorter form of its own, so this is an upper reference for that part).

With ``--embedded N`` it also builds N synthetic posts on the embedded SmolLM2 server (rounds 0, then
rounds 1 on the same cache) and sets each dry run's input-token estimate beside the prompt tokens the
server reported.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/spend_estimate.py --posts 100 [--o200k /tmp/tok] [--embedded 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from kecpm.agents import ApproximateTokenCounter, LlamaTokenCounter
from kecpm.agents.knowledge import format_critique, format_knowledge, prompt_variables
from kecpm.agents.schemas import Critique, Knowledge, StatementCheck
from kecpm.agents.spend import request_payload
from kecpm.paths import default_data_dir
from kecpm.post_files import load_split
from kecpm.records import Demonstration
from kecpm.synthetic import synthetic_posts

_NODE = """
const {encode} = require(process.argv[2] + '/node_modules/gpt-tokenizer/cjs/encoding/o200k_base');
const payloads = JSON.parse(require('fs').readFileSync(process.argv[3], 'utf8'));
const text = c => typeof c === 'string' ? c : (c || []).map(p => p.text || '').join(' ');
console.log(JSON.stringify(payloads.map(p => {
  let n = 3;
  for (const m of p.messages) n += 3 + encode(m.role).length + encode(text(m.content)).length;
  return [n, p.tools ? encode(JSON.stringify(p.tools)).length : 0];
})));
"""


def _posts(n: int) -> tuple[list, list, str]:
    data = default_data_dir()
    seed = data / "jmere" / "few_shot" / "seed_17" if data else None
    if seed is not None and (seed / "val.json").exists():
        return load_split(seed, "val")[:n], load_split(seed, "train")[:8], f"real val posts of {seed}"
    return synthetic_posts(n, seed=3), synthetic_posts(8, seed=4), "synthetic posts (no real data found)"


def _payloads(n: int, k: int) -> tuple[list[dict[str, Any]], str]:
    from kecpm.agents import KnowledgeChain
    from kecpm.llm import ChatClient, LLMConfig

    posts, pool, source = _posts(n)
    demos = [Demonstration.from_post(p, source="train") for p in pool[:k]]
    config = LLMConfig(base_url="http://127.0.0.1:9/v1", model="gpt-4o-mini", max_tokens=320)
    client = ChatClient(config)  # never contacted: request bodies are rendered, not sent
    chain = KnowledgeChain(client.model, rounds=1)
    knowledge = Knowledge(statements=["Alva Brenner is an actress.", "The Golden Reel is a film award."])
    critique = Critique(
        checks=[
            StatementCheck(index=1, verdict="plausible", reason="background"),
            StatementCheck(index=2, verdict="supported"),
        ],
        missing=["where the award was given"],
        accept=False,
    )
    builders = {s: request_payload(client.model, schema, "function_calling") for s, schema in
                (("generate", Knowledge), ("critique", Critique), ("revise", Knowledge))}  # fmt: skip
    payloads = []
    for post in posts:
        variables, _ = prompt_variables(post, demos)
        extra = {"knowledge": format_knowledge(knowledge), "critique": format_critique(knowledge, critique)}
        for stage, build in builders.items():
            body = build(chain.messages(stage, {**variables, **extra}))
            payloads.append({"stage": stage, "messages": body["messages"], "tools": body["tools"]})
    return payloads, source


def _errors(estimates: list[float], truth: list[float]) -> str:
    errors = [(e - t) / t for e, t in zip(estimates, truth, strict=True)]
    return (
        f"mean {statistics.mean(errors):+.1%}, mean |error| {statistics.mean(abs(e) for e in errors):.1%}, "
        f"range {min(errors):+.1%} .. {max(errors):+.1%}"
    )


async def _embedded(n: int) -> None:
    from kecpm.agents import KnowledgeBuilder
    from kecpm.llm import EmbeddedServer

    posts = synthetic_posts(n, seed=23)
    with tempfile.TemporaryDirectory() as folder:
        cache = Path(folder) / "k.sqlite"
        async with EmbeddedServer() as server:
            config = server.config(max_tokens=160, temperature=0.0)
            for rounds in (0, 1):
                estimate = await KnowledgeBuilder(config, cache=cache, rounds=rounds, progress=False).aestimate(posts)
                async with KnowledgeBuilder(config, cache=cache, rounds=rounds, progress=False) as builder:
                    report = await builder.abuild(posts)
                for stage, usage in report.usage.items():
                    if usage.calls:
                        s = estimate.stages[stage]
                        error = (s.input_tokens - usage.input_tokens) / usage.input_tokens
                        print(
                            f"embedded, rounds {rounds}, {stage}: estimated {s.input_tokens:.0f} input tokens in "
                            f"{s.calls:.0f} calls ({s.exact_calls} counted exactly, at most {s.input_tokens_max}), "
                            f"server {usage.input_tokens} in {usage.calls} calls: {error:+.1%}"
                        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=100)
    parser.add_argument("--k", type=int, default=2, help="demonstrations per prompt")
    parser.add_argument("--o200k", type=Path, default=None, help="a folder with node_modules/gpt-tokenizer")
    parser.add_argument("--embedded", type=int, default=0, help="also build N posts on the embedded server")
    args = parser.parse_args()
    payloads, source = _payloads(args.posts, args.k)
    approx, smol = ApproximateTokenCounter(), LlamaTokenCounter()
    messages_only = [{"messages": p["messages"]} for p in payloads]
    a_messages = [approx.count(p) for p in messages_only]
    a_full = [approx.count(p) for p in payloads]
    print(f"{len(payloads)} requests ({source}; generate, critique, revise; k={args.k})")
    print(f"approximate counter, messages + schema: mean {statistics.mean(a_full):.0f} tokens per request")
    s_counts = [smol.count(p) for p in payloads]  # the server leaves the schema out of the prompt
    print(f"SmolLM2 exact (messages, chat template): mean {statistics.mean(s_counts):.0f}")
    print(f"  approximation of the messages against SmolLM2: {_errors(a_messages, s_counts)}")
    if args.o200k is not None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "payloads.json"
            path.write_text(json.dumps(payloads), encoding="utf-8")
            script = Path(folder) / "count.js"
            script.write_text(_NODE, encoding="utf-8")
            command = ["node", str(script), str(args.o200k.resolve()), str(path)]
            counted = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        o_messages = [m for m, _ in counted]
        o_full = [m + t for m, t in counted]
        means = f"messages mean {statistics.mean(o_messages):.0f}, + schema JSON {statistics.mean(o_full):.0f}"
        print(f"o200k_base: {means}")
        print(f"  approximation of the messages against o200k_base: {_errors(a_messages, o_messages)}")
        print(f"  approximation of messages + schema against o200k_base: {_errors(a_full, o_full)}")
    if args.embedded:
        import asyncio

        asyncio.run(_embedded(args.embedded))


if __name__ == "__main__":
    main()
