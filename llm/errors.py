"""The error an LLM call ends in when it fails for good."""

from __future__ import annotations

from ..errors import KecpmError

__all__ = ["LLMCallError"]


class LLMCallError(KecpmError):
    """An LLM call that failed for good: ``kind`` says why, ``retryable`` whether a later run may succeed."""

    def __init__(self, message: str, *, kind: str, retryable: bool = True, stage: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable
        self.stage = stage
