"""The same batch on the local path and on a Ray cluster of 1 and 2 worker nodes of this machine.

Two workloads, each timed on the local path (one process) and on ``ray.cluster_utils.Cluster`` clusters
(a head node with no CPUs, which runs only the driver and the cache actor, plus 1 or 2 worker nodes of
``--cpus`` CPUs each), as ratios to the local path and to the ideal (the local rate times the workers):

- extraction: ``--posts`` synthetic posts through a MiniLM span-pair extractor (trained for one epoch
  here, or ``--model DIR``); local: one process, ``--cpus`` torch threads; cluster: Ray Data replicas
  of ``--cpus`` threads each (the replicas' start, model load included, is timed apart);
- knowledge: ``--knowledge-posts`` posts x 3 calls against the loopback server (its own process,
  ``--latency`` s per answer), ``--concurrency`` calls in flight for the whole run on every path;
  ideal: N*3*L/C.

And the cache actor's own bound: claims + stores per second from ``--hammer`` tasks (a call of 0 s).

    python benchmarks/cluster_bench.py                      # 2,000 posts, 600 knowledge posts
    python benchmarks/cluster_bench.py --posts 500 --knowledge-posts 200

Prints a table and writes the figures as JSON to ``--out`` (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from kecpm.pipeline import ClusterSettings, PipelineConfig, build_knowledge_on_cluster, predict_on_cluster
from kecpm.synthetic import synthetic_posts
from kecpm.testing import LoopbackServer


def _model(args: argparse.Namespace, out: Path) -> Path:
    if args.model is not None:
        return args.model
    from kecpm.eval import make_scorer
    from kecpm.extractor import SpanPairExtractor, TrainConfig

    train = synthetic_posts(42, seed=1, id_prefix="train")
    model = SpanPairExtractor()
    model.fit(train, train[:14], scorer=make_scorer(), config=TrainConfig(epochs=1, seed=0), progress=False)
    return model.save(out / "model")


def _local_extraction(model_dir: Path, posts: list, threads: int) -> tuple[dict[str, float], list]:
    import torch

    from kecpm.extractor import load_extractor

    torch.set_num_threads(threads)
    started = time.perf_counter()
    model = load_extractor(model_dir)
    loaded = time.perf_counter()
    model.predict(posts[:64])  # warm
    warm = time.perf_counter()
    predictions = model.predict(posts)
    done = time.perf_counter()
    return {
        "load_s": loaded - started,
        "predict_s": done - warm,
        "posts_per_s": len(posts) / (done - warm),
    }, predictions


def _cluster(nodes: int, cpus: int):
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        connect=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "object_store_memory": 200 * 2**20},
    )
    for _ in range(nodes):
        cluster.add_node(num_cpus=cpus, object_store_memory=200 * 2**20)
    cluster.wait_for_nodes()
    return cluster


def _cluster_extraction(model_dir: Path, posts: list, workers: int, cpus: int) -> tuple[dict[str, float], list]:
    settings = ClusterSettings(workers=workers, cpus_per_worker=cpus, batch_size=64)
    started = time.perf_counter()
    predict_on_cluster(model_dir, posts[: 64 * workers], settings=settings)  # replicas up, model loaded, warm
    warm = time.perf_counter()
    predictions = predict_on_cluster(model_dir, posts, settings=settings)
    done = time.perf_counter()
    figures = {"start_s": warm - started, "predict_s": done - warm, "posts_per_s": len(posts) / (done - warm)}
    return figures, predictions


def _knowledge_config(server: LoopbackServer, cache: Path, args: argparse.Namespace, **cluster) -> PipelineConfig:
    return PipelineConfig(
        llm={"base_url": server.base_url, "model": "loopback", "max_tokens_param": "max_tokens", "timeout": 60},
        rounds=1,
        concurrency=args.concurrency,
        knowledge_cache=cache,
        ray="auto",
        cluster={"chunk_size": 50, "lease_s": 60, **cluster},
    )


def _local_knowledge(config: PipelineConfig, posts: list) -> float:
    import asyncio

    from kecpm.pipeline import knowledge_builder

    async def run() -> float:
        started = time.perf_counter()
        async with knowledge_builder(config) as builder:
            await builder.abuild(posts, keep_results=False, progress=False)
        return time.perf_counter() - started

    return asyncio.run(run())


def _hammer(cache: Path, tasks: int, calls: int) -> float:
    """Cache-actor operations per second: each call is get_call + claim + put_call, as a paid call's are."""
    import ray

    from kecpm.agents import Usage
    from kecpm.pipeline.cluster_cache import SharedCache, start_cache_actor

    actor = start_cache_actor(cache, lease_s=60, concurrency=None, requests_per_second=None)
    shared = SharedCache(actor)

    def work(shared: SharedCache, start: int) -> int:
        for i in range(start, start + calls):
            key = f"k{i}"
            shared.get_call(key)
            shared.claim(key)
            shared.put_call(key, stage="generate", template="t@v1", model="m", output={"x": i}, usage=Usage())
        return calls

    remote = ray.remote(work).options(num_cpus=0.01)
    started = time.perf_counter()
    ray.get([remote.remote(shared, t * calls) for t in range(tasks)])
    seconds = time.perf_counter() - started
    ray.get(actor.close.remote())
    ray.kill(actor)
    return 3 * tasks * calls / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=2000)
    parser.add_argument("--knowledge-posts", type=int, default=600)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--cpus", type=int, default=1, help="CPUs (torch threads) per worker node")
    parser.add_argument("--hammer", type=int, default=4, help="tasks hammering the cache actor")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray

    out = args.out or Path(tempfile.mkdtemp(prefix="kecpm-cluster-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    posts = synthetic_posts(args.posts, seed=21, id_prefix="bench")
    kposts = synthetic_posts(args.knowledge_posts, seed=22, id_prefix="kbench")
    figures: dict[str, dict[str, float]] = {}
    model_dir = _model(args, out)
    figures["extract_local"], expected = _local_extraction(model_dir, posts, args.cpus)

    with LoopbackServer(process=True, latency=args.latency) as server:
        local_config = _knowledge_config(server, out / "local.sqlite", args).model_copy(update={"ray": None})
        seconds = _local_knowledge(local_config, kposts)
        distinct = server.stats()["completions"]
        figures["knowledge_local"] = {"seconds": seconds, "calls": distinct, "calls_per_s": distinct / seconds}
        server.reset()
        for nodes in (1, 2):
            cluster = _cluster(nodes, args.cpus)
            try:
                extraction, predicted = _cluster_extraction(model_dir, posts, nodes, args.cpus)
                extraction["identical"] = float(predicted == expected)
                figures[f"extract_ray_{nodes}"] = extraction
                cache = out / f"ray{nodes}.sqlite"
                config = _knowledge_config(server, cache, args, workers=nodes, cpus_per_worker=args.cpus)
                report = build_knowledge_on_cluster(config, kposts)
                stats = server.stats()
                server.reset()
                figures[f"knowledge_ray_{nodes}"] = {
                    "seconds": report.wall_s,
                    "calls": stats["completions"],
                    "repeated": stats["repeated"],
                    "calls_per_s": stats["completions"] / report.wall_s,
                }
                if nodes == 2:
                    figures["cache_actor"] = {"ops_per_s": _hammer(out / "hammer.sqlite", args.hammer, 300)}
            finally:
                ray.shutdown()
                cluster.shutdown()

    local_rate = figures["extract_local"]["posts_per_s"]
    ideal_knowledge = args.knowledge_posts * 3 * args.latency / args.concurrency
    print(f"extraction, {args.posts} posts, {args.cpus} thread(s) per worker")
    print(f"  local            {local_rate:8.1f} posts/s")
    for nodes in (1, 2):
        f = figures[f"extract_ray_{nodes}"]
        print(
            f"  ray, {nodes} node(s)   {f['posts_per_s']:8.1f} posts/s  x{f['posts_per_s'] / local_rate:.2f} local, "
            f"{f['posts_per_s'] / (nodes * local_rate):.2f} of ideal; replicas up in {f['start_s']:.1f} s; "
            f"identical: {bool(f['identical'])}"
        )
    print(f"knowledge, {args.knowledge_posts} posts x 3 calls, {args.latency} s latency, {args.concurrency} in flight")
    print(f"  ideal            {ideal_knowledge:8.1f} s")
    for name in ("knowledge_local", "knowledge_ray_1", "knowledge_ray_2"):
        f = figures[name]
        print(
            f"  {name:16} {f['seconds']:8.1f} s  {f['calls_per_s']:.1f} calls/s, "
            f"{ideal_knowledge / f['seconds']:.2f} of ideal, "
            f"x{figures['knowledge_local']['seconds'] / f['seconds']:.2f} local, repeated {f.get('repeated', 0)}"
        )
    print(f"cache actor: {figures['cache_actor']['ops_per_s']:.0f} operations/s (3 per paid call)")
    path = out / "cluster_bench.json"
    path.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **figures}, indent=2) + "\n")
    print(f"figures: {path}")


if __name__ == "__main__":
    main()
