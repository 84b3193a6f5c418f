"""kecpm on a real Ray cluster of this machine: a head node (no CPUs, so it runs only the driver and the
call cache actor) and two worker nodes of one CPU each, started once for the module
(``ray.cluster_utils.Cluster``); the loopback LLM server; a real (briefly trained) MiniLM extractor.

Killing a node is ``Cluster.remove_node`` without grace (its raylet and workers are killed). After the
extraction's node is lost a fresh node joins (as an autoscaler's would: the lost replica is restarted
there); the knowledge build, the module's last test, finishes on the one node left.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from kecpm.agents import KnowledgeBuilder, KnowledgeCache
from kecpm.pipeline import ClusterSettings, PipelineConfig
from kecpm.synthetic import synthetic_posts

ray = pytest.importorskip("ray", reason="the cluster tests need the kecpm[ray] extra")

NODE = {"num_cpus": 1, "object_store_memory": 80 * 2**20}


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    # Lean nodes on a small machine: no usage reports, no dashboard, small object stores.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    cluster = Cluster(
        initialize_head=True,
        connect=True,
        head_node_args={"num_cpus": 0, "object_store_memory": 80 * 2**20, "include_dashboard": False},
    )
    for _ in range(2):
        cluster.add_node(**NODE)
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def float32_model_dir(model_dir, tmp_path_factory) -> Path:
    """The trained model set to float32: bfloat16's sums depend on how posts are batched and threaded, so
    byte-identical predictions across paths are a float32 promise (kecpm.extractor.precision)."""
    from kecpm.extractor import load_extractor

    model = load_extractor(model_dir)
    model.config = model.config.model_copy(update={"inference_precision": "float32"})
    return model.save(tmp_path_factory.mktemp("float32") / "model")


def _worker_nodes(cluster) -> list:
    return [node for node in cluster.list_all_nodes() if node is not cluster.head_node]


def _kill_a_worker(cluster, *, replace: bool = False) -> None:
    """Kill one worker node (no grace); with ``replace``, a fresh one joins (as an autoscaler's would)."""
    cluster.remove_node(_worker_nodes(cluster)[0], allow_graceful=False)
    if replace:
        cluster.add_node(**NODE)


def _config(tmp_path: Path, server, **overrides) -> PipelineConfig:
    settings = {
        "llm": {"base_url": server.base_url, "model": "loopback", "max_tokens_param": "max_tokens"},
        "rounds": 1,
        "concurrency": 4,
        "knowledge_cache": tmp_path / "cluster.sqlite",
        "ray": "auto",
        "cluster": {"chunk_size": 4, "lease_s": 2.0},
        **overrides,
    }
    return PipelineConfig(**settings)


def _local_build(config: PipelineConfig, posts, path: Path) -> dict:
    import asyncio

    async def run():
        async with KnowledgeBuilder(config.llm, cache=path, rounds=config.rounds, concurrency=4, progress=False) as b:
            await b.abuild(posts, keep_results=False)
            return {r.post_id: r for r in b.cache.results(b.run_key)}

    return asyncio.run(run())


def _results(path: Path) -> dict:
    with KnowledgeCache(path) as cache:
        (run,) = cache.runs()
        return {r.post_id: r for r in cache.results(run)}


def test_without_ray_the_error_names_the_extra(monkeypatch):
    from kecpm.pipeline.cluster import RayUnavailable, import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RayUnavailable, match=r"kecpm\[ray\]"):
        import_ray()


def test_cluster_predictions_are_byte_identical_to_the_local_path(cluster, float32_model_dir, tmp_path):
    from typer.testing import CliRunner

    from kecpm.cli import app
    from kecpm.post_files import write_kecpm

    data = write_kecpm(synthetic_posts(45, seed=5, id_prefix="c"), tmp_path / "posts.json")
    runner = CliRunner()
    args = ["predict", "--model", str(float32_model_dir), "--data", str(data), "--batch-size", "8"]
    local = runner.invoke(app, [*args, "--out", str(tmp_path / "local.jsonl")])
    assert local.exit_code == 0, local.output
    on_cluster = runner.invoke(app, [*args, "--out", str(tmp_path / "ray.jsonl"), "--ray", "auto"])
    assert on_cluster.exit_code == 0, on_cluster.output
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()


def test_two_nodes_build_the_local_knowledge_paying_each_call_once(cluster, server, tmp_path):
    from kecpm.pipeline.cluster_knowledge import build_knowledge_on_cluster

    posts = synthetic_posts(16, seed=3, id_prefix="k")
    config = _config(tmp_path, server)
    local = _local_build(config, posts, tmp_path / "local.sqlite")
    distinct = server.stats()["completions"]
    server.reset()

    report = build_knowledge_on_cluster(config, posts)
    stats = server.stats()
    assert report.total == report.succeeded == len(posts) and report.tasks == 4
    assert stats["completions"] == stats["distinct"] == distinct and stats["repeated"] == 0
    assert report.calls == distinct and report.cluster["made"] == distinct
    built = _results(tmp_path / "cluster.sqlite")
    assert {i: (r.knowledge, [s.key for s in r.steps]) for i, r in built.items()} == {
        i: (r.knowledge, [s.key for s in r.steps]) for i, r in local.items()
    }

    again = build_knowledge_on_cluster(config, posts)  # everything is in the shared cache now
    assert server.stats()["completions"] == distinct and again.calls == 0 and again.cached == distinct


def test_limits_hold_for_the_cluster_as_a_whole(cluster, server, tmp_path):
    from kecpm.pipeline.cluster_knowledge import build_knowledge_on_cluster

    server.configure(latency=0.2)
    posts = synthetic_posts(12, seed=4, id_prefix="l")
    # One "worker" in the settings: each task keeps all 3 posts in flight, two tasks run at once (6 posts),
    # and the cache actor alone holds the calls to 3 at a time and 8 started per second.
    config = _config(
        tmp_path, server, rounds=0, concurrency=3, cluster={"chunk_size": 6, "workers": 1, "requests_per_second": 8}
    )
    started = time.perf_counter()
    report = build_knowledge_on_cluster(config, posts)
    seconds = time.perf_counter() - started
    assert report.succeeded == 12 and server.stats()["completions"] == 12
    assert server.stats()["max_in_flight"] <= 3 and report.cluster["peak_in_flight"] <= 3
    assert report.cluster["busy_limit"] > 0
    assert seconds >= (12 - 8) / 8  # a bucket of 8, then 8 per second


def test_experiment_cells_run_as_tasks_sharing_one_call_cache(cluster, server, tmp_path):
    from kecpm.experiments import Grid, run_experiment

    # rounds 0 and 1 ask the same generate calls: two tasks at once, and each distinct call paid once.
    grid = Grid.model_validate(
        {
            "name": "on-ray",
            "seeds": [1],
            "epochs": 1,
            "synthetic_size": (8, 4),
            "pipeline": {"llm": {"base_url": server.base_url, "model": "loopback", "max_tokens_param": "max_tokens"}},
            "axes": {"rounds": [0, 1]},
        }
    )
    events: list[tuple[str, str]] = []
    result = run_experiment(
        grid, tmp_path / "exp", ray="auto", on_event=lambda c, s, st, status, t: events.append((c, st))
    )
    stats = server.stats()
    assert sorted(events) == [("rounds=0", "run"), ("rounds=1", "run")]
    assert [len(c.runs) for c in result.cells] == [1, 1] and result.leaderboard["markdown"].exists()
    assert stats["repeated"] == 0 and stats["completions"] == stats["distinct"] == 12 + 24
    assert result.totals["calls_needed"] == 12 + 36 and result.totals["trainings"] == 2


def test_a_node_lost_mid_extraction_still_predicts_every_post_identically(cluster, float32_model_dir):
    from kecpm.extractor import load_extractor
    from kecpm.pipeline.cluster_extract import iter_cluster_predictions

    model_dir = float32_model_dir
    posts = synthetic_posts(240, seed=8, id_prefix="x")
    expected = load_extractor(model_dir).predict(posts)
    found: dict[int, list] = {}
    stream = iter_cluster_predictions(model_dir, posts, settings=ClusterSettings(batch_size=4, workers=2))
    for index, quintuples in stream:
        found[index] = quintuples
        if len(found) == 8:  # the replicas are up and predicting: lose one of them with its node
            _kill_a_worker(cluster, replace=True)  # its replica is restarted on the new node
    assert sorted(found) == list(range(len(posts)))
    assert [found[i] for i in range(len(posts))] == expected


def test_a_node_lost_mid_build_costs_only_its_calls_in_flight(cluster, server, tmp_path):
    from kecpm.pipeline.cluster_knowledge import build_knowledge_on_cluster

    server.configure(latency=0.4)
    posts = synthetic_posts(24, seed=6, id_prefix="n")
    config = _config(tmp_path, server, rounds=0)  # 24 calls; 2 posts in flight per task
    outcome: dict = {}

    def build() -> None:
        try:
            outcome["report"] = build_knowledge_on_cluster(config, posts)
        except BaseException as exc:  # shown by the assertion below
            outcome["error"] = exc

    builder = threading.Thread(target=build, daemon=True)
    builder.start()
    deadline = time.monotonic() + 120
    while server.stats()["completions"] < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    _kill_a_worker(cluster)  # the last test: the other node finishes alone
    builder.join(timeout=180)
    assert not builder.is_alive(), "the build did not finish after the node was lost"
    assert "error" not in outcome, repr(outcome.get("error"))
    report = outcome["report"]
    assert report.failed == 0 and report.succeeded == 24
    stats = server.stats()
    assert stats["distinct"] == 24  # every call answered; the lost node's calls in flight (2) asked again at most
    assert stats["repeated"] <= 2, stats
    built = _results(tmp_path / "cluster.sqlite")
    assert sorted(built) == sorted(p.id for p in posts) and all(r.knowledge for r in built.values())
    with KnowledgeCache(tmp_path / "cluster.sqlite") as cache:
        assert cache.count_calls() == 24 and cache.claims() == []
