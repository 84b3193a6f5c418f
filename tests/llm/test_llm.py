"""LLM access: the one environment convention (KECPM_LLM_*) and the retry policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from types import SimpleNamespace

import pytest
from tenacity import AsyncRetrying, stop_after_attempt

from kecpm.llm import LLMConfig, retry_policy
from kecpm.llm.retry import _retry_after
from kecpm.pipeline import PipelineConfig


def test_every_llm_setting_comes_from_kecpm_llm_variables_and_explicit_values_win(monkeypatch) -> None:
    monkeypatch.setenv("KECPM_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("KECPM_LLM_MODEL", "from-env")
    monkeypatch.setenv("KECPM_LLM_TEMPERATURE", "0.7")
    monkeypatch.setenv("KECPM_LLM_MAX_TOKENS", "99")
    monkeypatch.setenv("KECPM_LLM_API_KEY", "sk-not-a-setting")
    config = LLMConfig.from_env(model="explicit")
    assert (config.base_url, config.model, config.temperature, config.max_tokens) == (
        "http://127.0.0.1:9/v1",
        "explicit",
        0.7,
        99,
    )
    assert config.api_key is None  # the key is read at call time, from the variable api_key_env names
    assert config.resolve_key().get_secret_value() == "sk-not-a-setting"
    # The pipeline reads the same variables, under what its file or code set, and no other spelling.
    monkeypatch.setenv("KECPM_LLM__MODEL", "second-spelling")
    assert PipelineConfig().llm.model == "from-env"
    pipeline = PipelineConfig(llm={"model": "from-code"})
    assert pipeline.llm.model == "from-code" and pipeline.llm.max_tokens == 99
    assert pipeline.llm.base_url == "http://127.0.0.1:9/v1"


def test_retry_after_headers_are_read() -> None:
    def error(**headers: str) -> SimpleNamespace:
        return SimpleNamespace(response=SimpleNamespace(headers=headers))

    assert _retry_after(error(**{"retry-after": "3"})) == 3.0
    assert _retry_after(error(**{"retry-after-ms": "250"})) == 0.25
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < _retry_after(error(**{"retry-after": later})) <= 30
    assert _retry_after(error()) is None
    assert _retry_after(ValueError("no response")) is None


def test_retry_policy_from_a_number_or_a_policy() -> None:
    assert retry_policy(2).stop.max_attempt_number == 3
    custom = AsyncRetrying(stop=stop_after_attempt(7), reraise=True)
    assert retry_policy(custom) is custom
    with pytest.raises(ValueError):
        retry_policy(-1)
