"""Where the LLM is and how to call it: one pydantic model, one environment convention.

Every field of :class:`LLMConfig` may come from ``KECPM_LLM_<FIELD>`` (``KECPM_LLM_BASE_URL``,
``KECPM_LLM_MODEL``, ``KECPM_LLM_TEMPERATURE``, ``KECPM_LLM_MAX_TOKENS``, ...), read by
:meth:`LLMConfig.from_env`; explicit values win. The key is never a setting: it is read at call time
from the variable ``api_key_env`` names (default ``KECPM_LLM_API_KEY``).
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["API_KEY_ENV", "BASE_URL_ENV", "EMBEDDED_MODEL", "ENV_PREFIX", "MODEL_ENV", "LLMConfig"]

ENV_PREFIX = "KECPM_LLM_"
BASE_URL_ENV = ENV_PREFIX + "BASE_URL"
MODEL_ENV = ENV_PREFIX + "MODEL"
API_KEY_ENV = ENV_PREFIX + "API_KEY"
EMBEDDED_MODEL = "smollm2-135m-instruct"


class LLMConfig(BaseModel):
    """Where the LLM is and how to call it. ``base_url=None`` means the embedded SmolLM2 server.

    The key is a ``SecretStr`` (``repr`` shows ``**********``); when not given it is read from the
    environment variable named by ``api_key_env`` at call time, and it never enters cache keys.
    Prices are per million tokens, for the cost figures of a build report.
    """

    model_config = ConfigDict(frozen=True)

    base_url: str | None = None
    model: str = EMBEDDED_MODEL
    api_key: SecretStr | None = Field(default=None, exclude=True)
    api_key_env: str = API_KEY_ENV
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    max_tokens: int = Field(default=320, ge=1)
    max_tokens_param: Literal["max_completion_tokens", "max_tokens"] = Field(
        default="max_completion_tokens",
        description="How the cap is sent: ChatOpenAI sends max_completion_tokens, which llama-cpp-python's "
        "server ignores; servers like it need max_tokens (the embedded server gets it).",
    )
    timeout: float = Field(default=120.0, gt=0)
    structured_method: Literal["function_calling", "json_schema", "json_mode"] = "function_calling"
    transport: Literal["lean", "openai"] = Field(
        default="lean",
        description="lean: kecpm's chat model over one keep-alive HTTP pool (the least client CPU per call); "
        "openai: LangChain's ChatOpenAI over the openai SDK. Answers are the same: not part of cache keys.",
    )
    vision: bool = Field(default=False, description="Send the post's image as an image content part.")
    seed: int | None = None
    requests_per_second: float | None = Field(
        default=None,
        gt=0,
        description="At most this many requests per second (a LangChain InMemoryRateLimiter shared by every "
        "call of one client), beside the bound on posts in flight; None: no limit.",
    )
    burst: int = Field(default=1, ge=1, description="Requests the rate limiter lets through at once after a pause.")
    input_price: float = Field(default=0.0, ge=0, description="Cost per million input tokens.")
    output_price: float = Field(default=0.0, ge=0, description="Cost per million output tokens.")

    @classmethod
    def env_values(cls) -> dict[str, str]:
        """The fields set in the environment, ``KECPM_LLM_<FIELD>`` (never the key: see ``api_key_env``)."""
        values = {}
        for name in cls.model_fields:
            value = os.environ.get(ENV_PREFIX + name.upper())
            if name != "api_key" and value:
                values[name] = value
        return values

    @classmethod
    def from_env(cls, **overrides: Any) -> LLMConfig:
        """The environment's settings (:meth:`env_values`) under ``overrides`` (``None``: not given)."""
        return cls(**{**cls.env_values(), **{k: v for k, v in overrides.items() if v is not None}})

    @property
    def embedded(self) -> bool:
        return self.base_url is None

    def resolve_key(self) -> SecretStr:
        """The key to send; local servers accept any, so a placeholder stands in when none is set."""
        if self.api_key is not None:
            return self.api_key
        return SecretStr(os.environ.get(self.api_key_env) or "not-needed")

    def call_params(self) -> dict[str, Any]:
        """What changes an answer, for cache keys: model and sampling parameters (never the key or URL)."""
        return {
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "structured_method": self.structured_method,
            "vision": self.vision,
            "seed": self.seed,
        }

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_price + output_tokens * self.output_price) / 1e6
