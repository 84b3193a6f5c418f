"""LLM access: configuration (one environment convention, ``KECPM_LLM_*``), the chat client (kecpm's lean
chat model over its own HTTP pool, or ChatOpenAI), the embedded SmolLM2 server, and the retry policy.
Used by the knowledge agent; imports only root modules.

>>> from kecpm.llm import ChatClient, LLMConfig
>>> config = LLMConfig.from_env()  # KECPM_LLM_BASE_URL, KECPM_LLM_MODEL, ...; no base URL: the embedded SmolLM2
"""

from ..lazy import lazy_attributes
from .client import ChatClient
from .config import API_KEY_ENV, BASE_URL_ENV, EMBEDDED_MODEL, ENV_PREFIX, MODEL_ENV, LLMConfig
from .errors import LLMCallError, LLMHTTPError
from .retry import classify_error, retry_policy
from .server import EmbeddedServer, smollm2_path
from .transport import HTTPPool

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "EMBEDDED_MODEL",
    "ENV_PREFIX",
    "MODEL_ENV",
    "ChatClient",
    "ChatCompletionsModel",
    "EmbeddedServer",
    "HTTPPool",
    "LLMCallError",
    "LLMConfig",
    "LLMHTTPError",
    "StructuredCall",
    "classify_error",
    "retry_policy",
    "smollm2_path",
    "structured_runnable",
]

# These subclass LangChain's classes: imported on first use, so `import kecpm` stays light.
__getattr__ = lazy_attributes(
    __name__,
    {"ChatCompletionsModel": ".chat_model", "StructuredCall": ".structured", "structured_runnable": ".structured"},
)
