"""Retries of LLM calls: which errors are worth retrying, and a tenacity policy that honours Retry-After."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from typing import TYPE_CHECKING, Any

from .errors import LLMCallError

if TYPE_CHECKING:
    from tenacity import AsyncRetrying, RetryCallState

__all__ = ["classify_error", "retry_policy"]


_RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


def classify_error(exc: BaseException) -> tuple[str, bool]:
    """``(kind, retryable)`` of an exception raised by an LLM call."""
    import openai

    if isinstance(exc, LLMCallError):
        return exc.kind, exc.retryable
    if isinstance(exc, openai.APITimeoutError | asyncio.TimeoutError | TimeoutError):
        return "timeout", True
    if isinstance(exc, openai.APIConnectionError):
        return "connection", True
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return "auth", False
    if isinstance(exc, openai.RateLimitError):
        return "rate_limit", True
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        return ("server" if status >= 500 else f"http_{status}"), status in _RETRYABLE_STATUS
    if isinstance(exc, openai.APIResponseValidationError | json.JSONDecodeError):
        # A body that is not the JSON it should be: a transient server fault as far as we can tell.
        return "malformed_response", True
    return type(exc).__name__, False


def _retry_after(exc: BaseException | None) -> float | None:
    # The lean transport's LLMHTTPError carries the headers itself; the openai SDK's errors, on a response.
    headers = getattr(exc, "headers", None) or getattr(getattr(exc, "response", None), "headers", None)
    if not headers:
        return None
    if value := headers.get("retry-after-ms"):
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


class _WaitRetryAfter:
    """Wait what the server's Retry-After says (capped), else the fallback (exponential with jitter)."""

    def __init__(self, fallback: Any, cap: float) -> None:
        self.fallback = fallback
        self.cap = cap

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = _retry_after(exc)
        if hinted is not None:
            return min(hinted, self.cap)
        return float(self.fallback(state))


def retry_policy(
    retries: int | AsyncRetrying = 4,
    *,
    initial: float = 0.5,
    max_wait: float = 30.0,
) -> AsyncRetrying:
    """A tenacity policy for LLM calls, from a number of retries or a policy of your own (returned as is).

    The default retries timeouts, connection errors, 429 and 5xx with exponential backoff and jitter,
    waiting the server's Retry-After instead when it sends one (up to ``max_wait``).

    >>> policy = retry_policy(3)  # up to 3 retries after the first attempt
    >>> from tenacity import AsyncRetrying, stop_after_attempt
    >>> custom = retry_policy(AsyncRetrying(stop=stop_after_attempt(2), reraise=True))
    """
    from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

    if isinstance(retries, AsyncRetrying):
        return retries
    if retries < 0:
        raise ValueError("retries must be >= 0")
    return AsyncRetrying(
        stop=stop_after_attempt(retries + 1),
        wait=_WaitRetryAfter(wait_exponential_jitter(multiplier=initial, max=max_wait, jitter=initial), cap=max_wait),
        retry=retry_if_exception(lambda exc: classify_error(exc)[1]),
        reraise=True,
    )
