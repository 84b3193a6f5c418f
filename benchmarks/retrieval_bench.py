"""Retrieval benchmark: embedding throughput, top-k query latency and recall against exact search.

Builds an embedded store of N synthetic demonstrations (default 10,000), then for held-out synthetic
queries measures the Chroma top-k latency (p50/p95) and recall@k against exact brute-force cosine
computed with numpy over the same vectors in the same run. Targets: p50 <= 10 ms, recall@5 >= 0.99.

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python benchmarks/retrieval_bench.py --threads 1

Recall counts a returned demonstration as correct when its exact score reaches the exact k-th best
score (synthetic posts repeat, so tied demonstrations are interchangeable); the strict id recall is
printed too.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

from kecpm.records import Post
from kecpm.retrieval import DemonstrationStore, MiniLMEmbeddings, SelectionConfig, StoreConfig
from kecpm.retrieval.pools import demonstrations_from_posts
from kecpm.synthetic import synthetic_posts


class _Replay(MiniLMEmbeddings):
    """MiniLM that remembers what it embedded, so the store build measures Chroma, not a second
    embedding pass. Held-out queries are not remembered: the end-to-end timing embeds them for real."""

    def __init__(self, known: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.known = known

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in texts if t not in self.known]
        if missing:
            self.known.update(zip(missing, super().encode(missing), strict=True))
        return np.stack([self.known[t] for t in texts])


def percentile_ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="demonstrations in the store")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--ef-search", type=int, default=100, help="HNSW ef_search of the collection")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--store", type=Path, default=None, help="store directory (default: a temporary one)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"retrieval benchmark: {args.n} demonstrations, {args.queries} queries, k={args.k}, "
        f"torch threads {torch.get_num_threads()}, ef_search {args.ef_search}"
    )

    demos = demonstrations_from_posts(synthetic_posts(args.n, seed=1, id_prefix="demo"))
    queries: list[Post] = synthetic_posts(args.queries, seed=2, id_prefix="query")
    model = _Replay({})
    MiniLMEmbeddings.encode(model, ["warm-up"])

    # Embedding throughput: batched (the store's path) against one text at a time (the baseline).
    texts = [d.text for d in demos] + [d.image_description for d in demos]
    unique = list(dict.fromkeys(texts))
    start = time.perf_counter()
    model.encode(unique)
    batched_s = time.perf_counter() - start
    sample = unique[:200]
    start = time.perf_counter()
    for text in sample:
        MiniLMEmbeddings.encode(model, [text])
    single_rate = len(sample) / (time.perf_counter() - start)
    batched_rate = len(unique) / batched_s
    print(
        f"embedding: {len(unique)} distinct texts (of {len(texts)}: text + image description) in {batched_s:.1f} s "
        f"= {batched_rate:.0f} texts/s batched; one at a time {single_rate:.0f} texts/s "
        f"(x{batched_rate / single_rate:.1f})"
    )

    known = model.known
    with tempfile.TemporaryDirectory() as scratch:
        path = args.store or Path(scratch) / "store"
        store = DemonstrationStore(StoreConfig(path=path, hnsw_ef_search=args.ef_search), model, create=True)
        start = time.perf_counter()
        store.add(demos, batch_size=1000)
        build_s = time.perf_counter() - start
        print(
            f"store build (Chroma upsert + HNSW, vectors precomputed): {build_s:.1f} s "
            f"= {args.n / build_s:.0f} demonstrations/s; count {store.count()}"
        )

        text_matrix = np.stack([known[d.text] for d in demos])
        image_matrix = np.stack([known[d.image_description] for d in demos])
        selection = SelectionConfig(k=args.k)
        w_text, w_image = selection.weights
        query_vectors = MiniLMEmbeddings.encode(
            model, [q.text for q in queries] + [q.image_description for q in queries]
        )
        q_text, q_image = query_vectors[: len(queries)], query_vectors[len(queries) :]

        position = {d.id: i for i, d in enumerate(demos)}
        chroma_s, numpy_s, end_to_end_s = [], [], []
        strict_hits = tied_hits = 0
        for index, query in enumerate(queries):
            start = time.perf_counter()
            hits = store._nearest(q_text[index], q_image[index], selection, set())
            chroma_s.append(time.perf_counter() - start)

            start = time.perf_counter()
            exact = w_text * (text_matrix @ q_text[index]) + w_image * (image_matrix @ q_image[index])
            best = np.argpartition(-exact, args.k)[: args.k]
            best = best[np.argsort(-exact[best])]
            numpy_s.append(time.perf_counter() - start)

            kth = exact[best[-1]]
            exact_ids = {demos[i].id for i in best}
            strict_hits += sum(h.demonstration.id in exact_ids for h in hits)
            tied_hits += sum(exact[position[h.demonstration.id]] >= kth - 1e-5 for h in hits)

            start = time.perf_counter()
            store.search(query, selection=selection)
            end_to_end_s.append(time.perf_counter() - start)

        total = args.k * len(queries)
        p50, p95 = percentile_ms(chroma_s, 50), percentile_ms(chroma_s, 95)
        n50 = percentile_ms(numpy_s, 50)
        print(
            f"top-{args.k} query (Chroma HNSW, vector given): p50 {p50:.2f} ms, p95 {p95:.2f} ms "
            f"[target p50 <= 10 ms: {'met' if p50 <= 10 else 'MISSED'}]"
        )
        print(
            f"exact numpy brute force over {args.n} x 2 x {model.dimension}: p50 {n50:.2f} ms, "
            f"p95 {percentile_ms(numpy_s, 95):.2f} ms (Chroma/numpy p50 ratio {p50 / n50:.2f})"
        )
        print(
            f"end to end (embed text + caption, query, rebuild demonstrations): p50 "
            f"{percentile_ms(end_to_end_s, 50):.2f} ms, p95 {percentile_ms(end_to_end_s, 95):.2f} ms"
        )
        recall = tied_hits / total
        print(
            f"recall@{args.k} vs exact: {recall:.4f} (ties counted), {strict_hits / total:.4f} (strict ids) "
            f"[target >= 0.99: {'met' if recall >= 0.99 else 'MISSED'}]"
        )


if __name__ == "__main__":
    main()
