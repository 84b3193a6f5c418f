"""The error an LLM call ends in when it fails for good."""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import KecpmError

__all__ = ["LLMCallError", "LLMHTTPError"]


class LLMCallError(KecpmError):
    """An LLM call that failed for good: ``kind`` says why, ``retryable`` whether a later run may succeed."""

    def __init__(self, message: str, *, kind: str, retryable: bool = True, stage: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable
        self.stage = stage


class LLMHTTPError(LLMCallError):
    """An HTTP answer that is not 2xx: ``status`` and ``headers`` (lowercase names) kept for the retry
    policy (Retry-After) and the error's kind (``auth``, ``rate_limit``, ``server``, ``http_404``...)."""

    def __init__(self, message: str, *, status: int, headers: Mapping[str, str], kind: str, retryable: bool) -> None:
        super().__init__(message, kind=kind, retryable=retryable)
        self.status_code = status
        self.headers = dict(headers)
