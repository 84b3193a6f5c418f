"""The knowledge agent: demonstrations -> generate -> critique -> revise, with any OpenAI-compatible
LLM or the embedded SmolLM2, asynchronous, retried, cached.

>>> from kecpm.agents import KnowledgeBuilder, LLMConfig
>>> config = LLMConfig.from_env()  # $KECPM_LLM_BASE_URL, or None: the embedded SmolLM2
>>> async with KnowledgeBuilder(config, cache="out/knowledge.sqlite", rounds=1) as builder:  # doctest: +SKIP
...     report = await builder.abuild(posts, demonstrations=lambda post: store.aselect(post, k=2))
"""

from typing import Any

from .batch import DemonstrationSource, KnowledgeBuilder
from .cache import KnowledgeCache, content_key
from .images import ImageError, encode_image, image_part
from .knowledge import (
    DEFAULT_TEMPLATES,
    KnowledgeChain,
    format_critique,
    format_demonstrations,
    format_knowledge,
    prompt_variables,
)
from .llm import ChatClient, EmbeddedServer, LLMCallError, LLMConfig, classify_error, retry_policy, smollm2_path
from .loopback import LoopbackServer
from .schemas import (
    BuildReport,
    Critique,
    Knowledge,
    KnowledgeFailure,
    KnowledgeResult,
    StatementCheck,
    Step,
    Usage,
)

# The pipeline, the agent and the run step pull in LangChain's runnables: imported on first use.
_LAZY = {
    "AGENT_RECURSION_LIMIT": ".agent",
    "create_kecpm_agent": ".agent",
    "pipeline_tools": ".agent",
    "ImageDescriptionRequired": ".pipeline",
    "KECPMPipeline": ".pipeline",
    "PipelineInput": ".pipeline",
    "PipelineResult": ".pipeline",
    "PipelineConfig": ".pipeline_config",
    "RunConfig": ".run",
    "RunResult": ".run",
    "run_method": ".run",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AGENT_RECURSION_LIMIT",
    "DEFAULT_TEMPLATES",
    "BuildReport",
    "ChatClient",
    "Critique",
    "DemonstrationSource",
    "EmbeddedServer",
    "ImageDescriptionRequired",
    "ImageError",
    "KECPMPipeline",
    "Knowledge",
    "KnowledgeBuilder",
    "KnowledgeCache",
    "KnowledgeChain",
    "KnowledgeFailure",
    "KnowledgeResult",
    "LLMCallError",
    "LLMConfig",
    "LoopbackServer",
    "PipelineConfig",
    "PipelineInput",
    "PipelineResult",
    "RunConfig",
    "RunResult",
    "StatementCheck",
    "Step",
    "Usage",
    "classify_error",
    "content_key",
    "create_kecpm_agent",
    "encode_image",
    "format_critique",
    "format_demonstrations",
    "format_knowledge",
    "image_part",
    "pipeline_tools",
    "prompt_variables",
    "retry_policy",
    "run_method",
    "smollm2_path",
]
