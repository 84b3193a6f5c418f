"""LLM access: configuration (one environment convention, ``KECPM_LLM_*``), the chat client, the
embedded SmolLM2 server, and the retry policy. Used by the knowledge agent; imports only root modules.

>>> from kecpm.llm import ChatClient, LLMConfig
>>> config = LLMConfig.from_env()  # KECPM_LLM_BASE_URL, KECPM_LLM_MODEL, ...; no base URL: the embedded SmolLM2
"""

from .client import ChatClient
from .config import API_KEY_ENV, BASE_URL_ENV, EMBEDDED_MODEL, ENV_PREFIX, MODEL_ENV, LLMConfig
from .errors import LLMCallError
from .retry import classify_error, retry_policy
from .server import EmbeddedServer, smollm2_path

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "EMBEDDED_MODEL",
    "ENV_PREFIX",
    "MODEL_ENV",
    "ChatClient",
    "EmbeddedServer",
    "LLMCallError",
    "LLMConfig",
    "classify_error",
    "retry_policy",
    "smollm2_path",
]
