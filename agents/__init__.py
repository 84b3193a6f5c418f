"""The knowledge agent: demonstrations -> generate -> critique -> revise with any OpenAI-compatible LLM or
the embedded SmolLM2, asynchronous, retried, cached; and the LangChain agent that plans the method's
steps itself. LLM access lives in :mod:`kecpm.llm`; the method is wired in :mod:`kecpm.pipeline`.

>>> from kecpm.agents import KnowledgeBuilder
>>> from kecpm.llm import LLMConfig
>>> config = LLMConfig.from_env()  # KECPM_LLM_BASE_URL, ...; none: the embedded SmolLM2
>>> async with KnowledgeBuilder(config, cache="out/knowledge.sqlite", rounds=1) as builder:  # doctest: +SKIP
...     report = await builder.abuild(posts, demonstrations=lambda post: store.aselect(post, k=2))
"""

from ..lazy import lazy_attributes
from .batch import DemonstrationSource, KnowledgeBuilder
from .cache import CachedCall, KnowledgeCache
from .describe import describe_image
from .images import ImageError, encode_image, image_part
from .knowledge import (
    DEFAULT_TEMPLATES,
    KnowledgeChain,
    call_key,
    checks_by_number,
    format_critique,
    format_demonstrations,
    format_knowledge,
    prompt_variables,
)
from .schemas import (
    STAGES,
    BuildReport,
    Critique,
    Knowledge,
    KnowledgeFailure,
    KnowledgeResult,
    Reflection,
    SpendLimit,
    SpendReport,
    Stage,
    StatementCheck,
    Step,
    Usage,
)
from .spend import (
    ApproximateTokenCounter,
    BudgetExhausted,
    BudgetStopped,
    LlamaTokenCounter,
    SpendEstimate,
    SpendEstimator,
    SpendGuard,
    StageEstimate,
    TokenCounter,
    counter_for,
)

# The LangChain agent pulls in LangChain's agent machinery: imported on first use.
_LAZY = {
    "KnowledgeRunnable": ".runnable",
    "AGENT_RECURSION_LIMIT": ".agent",
    "AgentAnswer": ".agent",
    "PipelineSteps": ".agent",
    "create_kecpm_agent": ".agent",
    "pipeline_tools": ".agent",
}

__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = [
    "AGENT_RECURSION_LIMIT",
    "DEFAULT_TEMPLATES",
    "STAGES",
    "AgentAnswer",
    "ApproximateTokenCounter",
    "BudgetExhausted",
    "BudgetStopped",
    "BuildReport",
    "CachedCall",
    "Critique",
    "DemonstrationSource",
    "ImageError",
    "Knowledge",
    "KnowledgeBuilder",
    "KnowledgeCache",
    "KnowledgeChain",
    "KnowledgeFailure",
    "KnowledgeResult",
    "KnowledgeRunnable",
    "LlamaTokenCounter",
    "PipelineSteps",
    "Reflection",
    "SpendEstimate",
    "SpendEstimator",
    "SpendGuard",
    "SpendLimit",
    "SpendReport",
    "Stage",
    "StageEstimate",
    "StatementCheck",
    "Step",
    "TokenCounter",
    "Usage",
    "call_key",
    "checks_by_number",
    "counter_for",
    "create_kecpm_agent",
    "describe_image",
    "encode_image",
    "format_critique",
    "format_demonstrations",
    "format_knowledge",
    "image_part",
    "pipeline_tools",
    "prompt_variables",
]
