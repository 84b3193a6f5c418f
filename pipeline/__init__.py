"""The method wired once: post -> demonstrations -> knowledge -> quintuples.

- :class:`PipelineConfig`: what the pipeline is made of (store, LLM, templates, rounds, extractor).
- :mod:`~kecpm.pipeline.stages`: the three stage objects every path runs.
- :class:`KECPMPipeline`: the method as one LangChain Runnable (a post at a time, or ``abatch``).
- :func:`build_graph`: the method as a LangGraph graph, one node per stage, checkpointed and resumable.
- :func:`run_method` (``kecpm run``): the stages over a data set, each cached, then training and scoring,
  with a provenance :class:`Manifest`; :func:`estimate_method` its LLM spend, sending nothing.
- On a Ray cluster (``ray`` in the config, :class:`ClusterSettings`): :func:`predict_on_cluster` (Ray
  Data), :func:`build_knowledge_on_cluster` (tasks sharing one call cache actor).

The one layer that may import every stage, eval included.

>>> from kecpm.pipeline import KECPMPipeline, PipelineConfig
>>> async with KECPMPipeline(PipelineConfig.from_file("pipeline.toml")) as pipeline:  # doctest: +SKIP
...     result = await pipeline.ainvoke({"text": "...", "image_description": "..."})
"""

from ..lazy import lazy_attributes
from .cluster import RayUnavailable
from .config import ClusterSettings, PipelineConfig
from .manifest import Manifest, git_revision, is_secret_name, redact
from .stages import ExtractQuintuples, RetrieveDemonstrations, knowledge_builder

# The Runnable and the batch run pull in LangChain's runnables and the stages' heavy parts: on first use.
_LAZY = {
    "PipelineState": ".graph",
    "build_graph": ".graph",
    "graph_builder": ".graph",
    "sqlite_checkpointer": ".graph",
    "ImageDescriptionRequired": ".runnable",
    "KECPMPipeline": ".runnable",
    "PipelineResult": ".runnable",
    "RunConfig": ".run",
    "build_knowledge_on_cluster": ".cluster_knowledge",
    "predict_on_cluster": ".cluster_extract",
    "RunResult": ".run",
    "estimate_method": ".run",
    "run_method": ".run",
}

__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = [
    "ClusterSettings",
    "ExtractQuintuples",
    "ImageDescriptionRequired",
    "KECPMPipeline",
    "Manifest",
    "PipelineConfig",
    "PipelineResult",
    "PipelineState",
    "RayUnavailable",
    "RetrieveDemonstrations",
    "RunConfig",
    "RunResult",
    "build_graph",
    "build_knowledge_on_cluster",
    "estimate_method",
    "git_revision",
    "graph_builder",
    "is_secret_name",
    "knowledge_builder",
    "predict_on_cluster",
    "redact",
    "run_method",
    "sqlite_checkpointer",
]
