"""Knowledge-build throughput against the loopback OpenAI-compatible server, and the embedded LLM's options.

Default run: N synthetic posts x 3 calls (generate, critique that rejects, revise) against the loopback
server (its own process, so that the figures are the client's CPU alone: ``time.process_time`` of this
process) answering after L seconds, C posts in flight, with the call cache and its leases on. Compared,
in the same run, with

- the ideal: max(N*3*L/C, client CPU per call x N*3), the CPU per call measured during the run;
- a sequential loop (one post after another, as peer scripts do), timed on ``--sample`` posts and
  extrapolated to N (said so in the output);
- a rerun from the cache (targets: 0 calls, under 5 s);
- with ``--transport both``, the build over each transport (``lean``: kecpm's chat model and HTTP pool;
  ``openai``: ChatOpenAI over the openai SDK), as a ratio of client CPU per call.

The load average before and after is printed too: other work on the machine shows there.

    python benchmarks/knowledge_bench.py                       # N=2000, L=1 s, C=64
    python benchmarks/knowledge_bench.py --posts 200 --latency 0.2
    python benchmarks/knowledge_bench.py --posts 4000 --concurrency 256 --transport both
    python benchmarks/knowledge_bench.py --embedded            # llama_cpp in-process vs its HTTP server

Prints a table and writes the figures as JSON to ``--out`` (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from kecpm.agents import KnowledgeBuilder
from kecpm.llm import LLMConfig
from kecpm.records import Demonstration
from kecpm.synthetic import synthetic_posts
from kecpm.testing import LoopbackServer


async def _loopback_run(args: argparse.Namespace, out: Path) -> dict[str, float]:
    posts = synthetic_posts(args.posts, seed=11, id_prefix="bench")
    pool = synthetic_posts(50, seed=12, id_prefix="pool")
    demos = {
        p.id: [Demonstration.from_post(pool[i % 50]), Demonstration.from_post(pool[(i + 7) % 50])]
        for i, p in enumerate(posts)
    }
    figures: dict[str, float] = {"posts": args.posts, "latency_s": args.latency, "concurrency": args.concurrency}
    figures["load_before"] = os.getloadavg()[0]
    transports = ["lean", "openai"] if args.transport == "both" else [args.transport]
    with LoopbackServer(process=True, latency=args.latency) as server:
        config = LLMConfig(base_url=server.base_url, model="loopback", timeout=60, transport=transports[0])

        # Sequential baseline on a sample, no cache
        sample = posts[: args.sample]
        async with KnowledgeBuilder(config, concurrency=1, progress=False) as builder:
            started = time.perf_counter()
            for post in sample:
                await builder.ainvoke(post, demos[post.id])
            sequential = time.perf_counter() - started
        figures["sequential_sample_posts"] = len(sample)
        figures["sequential_sample_s"] = sequential
        figures["sequential_extrapolated_s"] = sequential / len(sample) * args.posts
        server.reset()

        for transport in reversed(transports):  # the default transport last: its cache is the rerun's
            cache = out / "bench.sqlite"
            cache.unlink(missing_ok=True)
            async with KnowledgeBuilder(
                config.model_copy(update={"transport": transport}),
                cache=cache,
                concurrency=args.concurrency,
                progress=args.progress,
            ) as builder:
                cpu = time.process_time()
                started = time.perf_counter()
                report = await builder.abuild(posts, demos, keep_results=False)
                wall = time.perf_counter() - started
                cpu = time.process_time() - cpu
            stats = server.stats()
            server.reset()
            calls = stats["completions"]
            figures[f"{transport}_client_cpu_ms_per_call"] = cpu / calls * 1000
            figures[f"{transport}_wall_s"] = wall
        figures |= {
            "transport": transports[0],
            "calls": calls,
            "failed_posts": report.failed,
            "wall_s": wall,
            "client_cpu_s": cpu,
            "client_cpu_ms_per_call": cpu / calls * 1000,
            "max_in_flight": stats["max_in_flight"],
        }
        if len(transports) == 2:
            figures["openai_over_lean_cpu"] = (
                figures["openai_client_cpu_ms_per_call"] / figures["client_cpu_ms_per_call"]
            )
        ideal = max(args.posts * 3 * args.latency / args.concurrency, cpu / calls * args.posts * 3)
        figures["ideal_s"] = ideal
        figures["ratio_to_ideal"] = wall / ideal
        figures["speedup_vs_sequential"] = figures["sequential_extrapolated_s"] / wall

        server.reset()
        async with KnowledgeBuilder(config, cache=cache, concurrency=args.concurrency, progress=False) as builder:
            started = time.perf_counter()
            rerun = await builder.abuild(posts, demos, keep_results=False)
            figures["rerun_s"] = time.perf_counter() - started
        figures["rerun_calls"] = server.stats()["requests"]
        figures["rerun_cached"] = rerun.cached
    figures["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures["load_after"] = os.getloadavg()[0]
    return figures


def _print_loopback(f: dict[str, float]) -> None:
    n, c, latency = int(f["posts"]), int(f["concurrency"]), f["latency_s"]
    print(f"knowledge build: {n} posts x 3 calls, server latency {latency:g} s, concurrency {c}, cache and leases on")
    print(f"  calls made                 {int(f['calls'])} ({int(f['failed_posts'])} posts failed)")
    print(f"  wall time                  {f['wall_s']:.1f} s")
    print(
        f"  client CPU per call        {f['client_cpu_ms_per_call']:.2f} ms ({f['transport']} transport; target <= 3)"
    )
    if "openai_over_lean_cpu" in f:
        print(
            f"  ... over ChatOpenAI        {f['openai_client_cpu_ms_per_call']:.2f} ms, "
            f"{f['openai_wall_s']:.1f} s wall: {f['openai_over_lean_cpu']:.2f}x the lean transport's CPU"
        )
    print(f"  ideal max(N*3*L/C, cpu*N*3) {f['ideal_s']:.1f} s")
    print(f"  ratio to ideal             {f['ratio_to_ideal']:.3f}x (target <= 1.15x)")
    print(
        f"  sequential loop            {f['sequential_extrapolated_s']:.0f} s, extrapolated from "
        f"{int(f['sequential_sample_posts'])} posts timed at {f['sequential_sample_s']:.1f} s"
    )
    print(f"  speed-up over sequential   {f['speedup_vs_sequential']:.0f}x")
    print(f"  rerun from the cache       {f['rerun_s']:.2f} s, {int(f['rerun_calls'])} calls (targets: < 5 s, 0 calls)")
    print(f"  max requests in flight    {int(f['max_in_flight'])}; peak RSS {f['peak_rss_mib']:.0f} MiB")
    print(f"  load average (1 min)       {f['load_before']:.2f} before, {f['load_after']:.2f} after")


def _embedded_run(args: argparse.Namespace) -> dict[str, float]:
    """The same structured generate call, in-process (llama_cpp) and over HTTP (llama_cpp.server)."""
    from llama_cpp import Llama

    from kecpm.agents import Knowledge, KnowledgeChain
    from kecpm.agents.knowledge import prompt_variables
    from kecpm.llm import EmbeddedServer, smollm2_path

    posts = synthetic_posts(args.calls, seed=5)
    pool = synthetic_posts(10, seed=6, id_prefix="pool")
    path = smollm2_path()
    from langchain_core.utils.function_calling import convert_to_openai_tool

    tool = convert_to_openai_tool(Knowledge)  # the very tool LangChain sends over HTTP
    figures: dict[str, float] = {"calls": args.calls, "max_tokens": args.max_tokens}

    # Messages exactly as the chain renders them
    class _Renderer(KnowledgeChain):
        def __init__(self) -> None:
            from kecpm.prompts import load_template

            self.templates = {"generate": load_template("generate")}
            self._prompts = {"generate": self.templates["generate"].chat_prompt()}

    renderer = _Renderer()
    role = {"system": "system", "human": "user", "ai": "assistant"}
    conversations = []
    for i, post in enumerate(posts):
        variables, _ = prompt_variables(
            post, [Demonstration.from_post(pool[i % 10]), Demonstration.from_post(pool[(i + 1) % 10])]
        )
        conversations.append(
            [{"role": role[m.type], "content": m.text} for m in renderer.messages("generate", variables)]
        )

    started = time.perf_counter()
    llm = Llama(model_path=str(path), n_ctx=4096, n_threads=1, n_threads_batch=1, verbose=False)
    figures["inprocess_load_s"] = time.perf_counter() - started
    tokens = 0
    started = time.perf_counter()
    for messages in conversations:
        answer = llm.create_chat_completion(
            messages=messages,
            tools=[tool],
            tool_choice={"type": "function", "function": {"name": "Knowledge"}},
            max_tokens=args.max_tokens,
            temperature=0.0,
        )
        tokens += answer["usage"]["completion_tokens"]
    figures["inprocess_s_per_call"] = (time.perf_counter() - started) / len(conversations)
    figures["inprocess_tokens_per_call"] = tokens / len(conversations)
    del llm

    async def over_http() -> None:
        from langchain_core.messages import convert_to_messages

        started = time.perf_counter()
        async with EmbeddedServer() as server:
            figures["server_start_s"] = time.perf_counter() - started
            from kecpm.llm import ChatClient

            config = server.config(max_tokens=args.max_tokens, temperature=0.0)
            async with ChatClient(config) as client:
                structured = client.structured(Knowledge)
                produced = 0
                started = time.perf_counter()
                for messages in conversations:
                    answer = await structured.ainvoke(
                        convert_to_messages([(m["role"], m["content"]) for m in messages])
                    )
                    produced += answer["raw"].usage_metadata["output_tokens"]
                figures["server_s_per_call"] = (time.perf_counter() - started) / len(conversations)
                figures["server_tokens_per_call"] = produced / len(conversations)

    asyncio.run(over_http())
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--sample", type=int, default=5, help="posts timed in the sequential loop")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument(
        "--transport", choices=["lean", "openai", "both"], default="lean", help="the chat model (both: compare)"
    )
    parser.add_argument("--embedded", action="store_true", help="compare in-process llama_cpp with its server")
    parser.add_argument("--calls", type=int, default=4, help="--embedded: calls per variant")
    parser.add_argument("--max-tokens", type=int, default=200, help="--embedded: cap per answer")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="kecpm-knowledge-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.embedded:
        figures = _embedded_run(args)
        print(f"embedded SmolLM2-135M, {args.calls} generate calls per variant, n_threads=1, temperature 0")
        inproc, served = figures["inprocess_s_per_call"], figures["server_s_per_call"]
        print(
            f"  in-process llama_cpp   load {figures['inprocess_load_s']:.2f} s, {inproc:.2f} s/call, "
            f"{figures['inprocess_tokens_per_call']:.0f} tokens/call"
        )
        print(
            f"  llama_cpp.server HTTP  start {figures['server_start_s']:.2f} s, {served:.2f} s/call, "
            f"{figures['server_tokens_per_call']:.0f} tokens/call"
        )
        per_token = served / figures["server_tokens_per_call"] / (inproc / figures["inprocess_tokens_per_call"])
        print(f"  ratio server/in-process: {served / inproc:.2f} per call, {per_token:.2f} per output token")
        name = "embedded.json"
    else:
        figures = asyncio.run(_loopback_run(args, out))
        _print_loopback(figures)
        name = "loopback.json"
    (out / name).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(f"figures: {out / name}", file=sys.stderr)


if __name__ == "__main__":
    main()
