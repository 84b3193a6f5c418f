"""The extractor over many posts on a Ray cluster, with Ray Data.

The posts become a dataset; the extractor is a stateful callable class in ``map_batches`` (each of
``workers`` replicas loads the model once and predicts batch after batch); the quintuples come back in
input order, so the predictions file is the one the local path writes, byte for byte. A replica lost
with its node is restarted elsewhere and its batches are run again (predicting is pure: nothing is
paid or written twice).

>>> predictions = predict_on_cluster("runs/s17/model", posts, address="auto")  # doctest: +SKIP
>>> write_predictions("preds.jsonl", predictions, img_ids=[p.img_id for p in posts])  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..records import Post, Quintuple
from .cluster import cluster_workers, ray_session
from .config import ClusterSettings

__all__ = ["ExtractorReplica", "iter_cluster_predictions", "predict_on_cluster"]


class ExtractorReplica:
    """One replica of the extractor on a worker: loaded once, then called with batch after batch.

    A batch holds ``index`` (the posts' places in the input) and ``post`` (each post as JSON); the
    answer holds ``index`` and ``quintuples`` (each post's as a JSON list).
    """

    def __init__(self, folder: str, *, threads: int = 1, int8: bool = False) -> None:
        import torch

        from ..extractor import load_extractor

        torch.set_num_threads(max(1, threads))
        model = load_extractor(folder)
        self.model = model.quantized() if int8 else model

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        posts = [Post.model_validate_json(text) for text in batch["post"]]
        predicted = self.model.predict(posts, batch_size=len(posts))
        answers = [json.dumps([q.model_dump(mode="json") for q in quintuples]) for quintuples in predicted]
        return {"index": np.asarray(batch["index"]), "quintuples": np.asarray(answers, dtype=object)}


def iter_cluster_predictions(
    extractor: str | Path,
    posts: Sequence[Post],
    *,
    address: str = "auto",
    settings: ClusterSettings | None = None,
    int8: bool = False,
) -> Iterator[tuple[int, list[Quintuple]]]:
    """``(index, quintuples)`` of each post, in input order, as the cluster's replicas of the extractor
    in ``extractor`` (a folder every node can read) predict them: a long input streams through."""
    settings = settings or ClusterSettings()
    if not posts:
        return
    with ray_session(address) as ray:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        workers = min(cluster_workers(ray, settings.cpus_per_worker, settings.workers), len(posts))
        rows = [{"index": i, "post": post.model_dump_json()} for i, post in enumerate(posts)]
        # One block per batch, so a lost node loses (and reruns) little.
        blocks = -(-len(rows) // settings.batch_size)
        dataset = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
            ExtractorReplica,
            fn_constructor_kwargs={
                "folder": str(Path(extractor).resolve()),
                "threads": max(1, int(settings.cpus_per_worker)),
                "int8": int8,
            },
            batch_size=settings.batch_size,
            batch_format="numpy",
            concurrency=workers,
            num_cpus=settings.cpus_per_worker,
            # A replica lost with its node is restarted and its batch run again: Ray Data's defaults for
            # actor pools (max_restarts=-1, max_task_retries=-1), relied on and tested here.
        )
        for row in dataset.iter_rows():
            yield int(row["index"]), [Quintuple.model_validate(q) for q in json.loads(row["quintuples"])]


def predict_on_cluster(
    extractor: str | Path,
    posts: Sequence[Post],
    *,
    address: str = "auto",
    settings: ClusterSettings | None = None,
    int8: bool = False,
) -> list[list[Quintuple]]:
    """Each post's quintuples, in input order (as ``extractor.predict`` returns them), from the cluster."""
    predicted: list[list[Quintuple] | None] = [None] * len(posts)
    for index, quintuples in iter_cluster_predictions(extractor, posts, address=address, settings=settings, int8=int8):
        predicted[index] = quintuples
    missing = [posts[i].id for i, found in enumerate(predicted) if found is None]
    if missing:  # a defect of the engine, never silently written as empty predictions
        raise RuntimeError(f"the cluster returned no prediction for {len(missing)} posts: {missing[:5]}")
    return [found for found in predicted if found is not None]
