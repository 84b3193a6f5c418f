"""Load: knowledge for 10,000 posts against the loopback server (its own process), 1 s latency, 64 in flight.

Checks two properties of ``KnowledgeBuilder`` under a long build:

- memory stays flat: the posts are pulled lazily from a generator, results go to the cache, not to a
  list (``keep_results=False``); RSS is sampled every ``--sample-s`` seconds and the mean of the last
  quarter of the build is compared with the mean of the first quarter (target: at most 1.10x; and the
  peak RSS is reported);
- wall time against the ideal ``N x calls-per-post x L / C`` (target: at most 1.15x). ``--rounds 0``
  (the default) makes one call per post (generate only); ``--rounds 1`` with a rejecting critique makes
  three (generate, critique, revise), and the ideal counts them. The client's CPU per call (measured in
  the run) is quoted with the floor it sets, ``CPU per call x calls``, as the knowledge benchmark does.

The cache (with its per-call leases) is on, as in a real build.

    nice -n 10 python benchmarks/load_bench.py                         # N=10000, L=1 s, C=64, rounds 0
    python benchmarks/load_bench.py --posts 1000 --latency 0.2         # a quick look

Prints the figures and writes them as JSON to ``--out`` (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from kecpm.agents import KnowledgeBuilder
from kecpm.llm import LLMConfig
from kecpm.records import Post
from kecpm.synthetic import synthetic_posts
from kecpm.testing import LoopbackServer


def _posts(n: int) -> Iterator[Post]:
    """``n`` distinct posts made lazily (each text carries its number, so no two prompts coincide)."""
    made = 0
    while made < n:
        for base in synthetic_posts(min(500, n - made), seed=made, id_prefix="load"):
            yield Post(id=f"load-{made}", tokens=[*base.tokens, f"#{made}"], image_descriptions=base.image_descriptions)
            made += 1


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class _Sampler(threading.Thread):
    """RSS every ``period`` seconds, in a thread (the event loop's stalls do not skew the timing)."""

    def __init__(self, period: float) -> None:
        super().__init__(daemon=True)
        self.period = period
        self.samples: list[tuple[float, float]] = []
        self._halt = threading.Event()
        self._t0 = time.perf_counter()

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.perf_counter() - self._t0, _rss_mib()))
            self._halt.wait(self.period)

    def stop(self) -> None:
        self._halt.set()
        self.join()


async def _build(args: argparse.Namespace, out: Path) -> dict[str, float]:
    with LoopbackServer(process=True, latency=args.latency) as server:
        config = LLMConfig(base_url=server.base_url, model="loopback", timeout=60)
        cache = out / "load.sqlite"
        cache.unlink(missing_ok=True)
        async with KnowledgeBuilder(
            config, cache=cache, rounds=args.rounds, concurrency=args.concurrency, progress=args.progress
        ) as builder:
            sampler = _Sampler(args.sample_s)
            cpu_before = time.process_time()
            sampler.start()
            started = time.perf_counter()
            report = await builder.abuild(_posts(args.posts), keep_results=False)
            wall = time.perf_counter() - started
            sampler.stop()
            cpu = time.process_time() - cpu_before
        stats = server.stats()
    calls_per_post = 1 if args.rounds == 0 else 3
    calls = report.calls
    rss = [r for _, r in sampler.samples]
    quarter = max(1, len(rss) // 4)
    first, last = sum(rss[:quarter]) / quarter, sum(rss[-quarter:]) / quarter
    ideal = args.posts * calls_per_post * args.latency / args.concurrency
    return {
        "posts": args.posts,
        "latency_s": args.latency,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "calls_per_post": calls_per_post,
        "calls": calls,
        "server_completions": stats["completions"],
        "server_max_in_flight": stats["max_in_flight"],
        "succeeded": report.succeeded,
        "failed": report.failed,
        "wall_s": wall,
        "ideal_s": ideal,
        "wall_over_ideal": wall / ideal,
        "client_cpu_s": cpu,
        "client_cpu_per_call_ms": 1000 * cpu / max(calls, 1),
        "rss_first_quarter_mib": first,
        "rss_last_quarter_mib": last,
        "rss_last_over_first": last / first,
        "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_samples": len(rss),
        "rss_timeline_mib": [round(r, 1) for r in rss[:: max(1, len(rss) // 20)]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=0, help="0: one call per post; 1: three (critique rejects)")
    parser.add_argument("--sample-s", type=float, default=1.0, help="seconds between RSS samples")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="kecpm-load-"))
    out.mkdir(parents=True, exist_ok=True)
    figures = asyncio.run(_build(args, out))
    (out / "load_bench.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(
        f"{figures['posts']:,} posts x {figures['calls_per_post']} call(s), L={figures['latency_s']:g} s, "
        f"C={figures['concurrency']}: {figures['succeeded']:,} built, {figures['failed']} failed, "
        f"{figures['calls']:,} calls (server: {figures['server_completions']:,}, "
        f"max in flight {figures['server_max_in_flight']})"
    )
    print(
        f"wall {figures['wall_s']:.1f} s; ideal N x calls x L / C = {figures['ideal_s']:.1f} s; "
        f"ratio {figures['wall_over_ideal']:.3f} (target <= 1.15)"
    )
    print(
        f"client CPU {figures['client_cpu_s']:.1f} s ({figures['client_cpu_per_call_ms']:.2f} ms per call; "
        "below the ideal: the latency bounds the build)"
        if figures["client_cpu_s"] < figures["ideal_s"]
        else f"client CPU {figures['client_cpu_s']:.1f} s: ABOVE the latency ideal, the client is the bound"
    )
    print(
        f"RSS: first quarter {figures['rss_first_quarter_mib']:.1f} MiB, last quarter "
        f"{figures['rss_last_quarter_mib']:.1f} MiB (x{figures['rss_last_over_first']:.3f}, target <= 1.10); "
        f"peak {figures['rss_peak_mib']:.1f} MiB; over time: {figures['rss_timeline_mib']}"
    )
    print(f"figures: {out / 'load_bench.json'}")
    ok = figures["wall_over_ideal"] <= 1.15 and figures["rss_last_over_first"] <= 1.10 and figures["failed"] == 0
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
