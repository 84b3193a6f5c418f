"""Point 5: an API key is a secret type and never reaches a log, a cache, a report, a manifest, an
exception text or a ``repr``. A key is planted through the variable ``api_key_env`` names, the loopback
server requires it (so it was really sent), and every file a full ``kecpm run`` and a
``kecpm knowledge build`` write, their output and every log record are searched for it."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from kecpm.agents import KnowledgeBuilder
from kecpm.cli import app
from kecpm.llm import ChatClient, LLMConfig
from kecpm.pipeline import PipelineConfig

KEY = "sk-PLANTED-0123456789abcdefSECRET"
KEY_ENV = "KECPM_RELIABILITY_TEST_KEY"


def _files_holding(root: Path, secret: str) -> list[Path]:
    """Every file under ``root`` (binary ones too: SQLite, model weights, Chroma) that holds ``secret``."""
    needles = [secret.encode(), secret.encode("utf-16-le")]
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if any(needle in data for needle in needles):
                found.append(path)
    return found


@pytest.fixture
def keyed_server(server, monkeypatch):
    server.configure(api_key=KEY)
    monkeypatch.setenv(KEY_ENV, KEY)
    yield server
    server.configure(api_key=None)


def test_a_full_run_and_a_knowledge_build_write_the_key_nowhere(
    keyed_server, make_posts, data_file, build_command, tmp_path: Path, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    config = tmp_path / "kecpm.toml"
    config.write_text(
        f'rounds = 1\n[llm]\nbase_url = "{keyed_server.base_url}"\nmodel = "loopback"\napi_key_env = "{KEY_ENV}"\n',
        encoding="utf-8",
    )
    runner = CliRunner()
    run = runner.invoke(
        app,
        ["run", "--config", str(config), "--out", str(tmp_path / "run"), "--epochs", "1", "--limit", "8"],
    )
    assert run.exit_code == 0, run.output
    data = data_file(make_posts(6, prefix="secret"))
    build = runner.invoke(
        app, build_command(data, tmp_path / "build", keyed_server, "--api-key-env", KEY_ENV, "--rounds", "1")[3:]
    )
    assert build.exit_code == 0, build.output
    stats = keyed_server.stats()
    assert stats["completions"] > 0 and stats["unauthorized"] == 0  # the key was sent, and accepted

    # The manifest keeps its provenance: every stage key is there to compare runs by.
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text(encoding="utf-8"))
    stages = manifest["extra"]["stages"]
    assert {"index", "knowledge", "train", "predict", "eval"} <= set(stages)
    assert all(re.fullmatch(r"[0-9a-f]{16}", stages[name]["key"]) for name in stages), stages
    assert stages["knowledge"]["run"] and "**********" not in json.dumps(stages)

    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in written) and any(p.suffix == ".sqlite" for p in written)
    assert _files_holding(tmp_path, KEY) == []
    assert KEY not in run.output and KEY not in build.output
    assert caplog.records and not [r for r in caplog.records if KEY in r.getMessage()]


def test_a_refused_key_is_a_clear_failure_without_the_key(
    server, make_posts, data_file, build_command, tmp_path: Path, monkeypatch, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    server.configure(api_key="the-right-key-is-something-else")
    monkeypatch.setenv(KEY_ENV, KEY)
    data = data_file(make_posts(3, prefix="refused"))
    result = CliRunner().invoke(
        app, build_command(data, tmp_path / "build", server, "--api-key-env", KEY_ENV, "--rounds", "0")[3:]
    )
    server.configure(api_key=None)
    assert result.exit_code == 1
    assert "auth" in result.output and KEY_ENV in result.output  # says what to fix, where
    assert KEY not in result.output
    assert _files_holding(tmp_path, KEY) == []
    assert not [r for r in caplog.records if KEY in r.getMessage()]


async def test_secret_types_hide_the_key_in_repr_dumps_and_errors(server, make_posts, monkeypatch) -> None:
    config = LLMConfig(base_url=server.base_url, model="loopback", api_key=SecretStr(KEY))
    assert isinstance(config.api_key, SecretStr)
    for text in (repr(config), str(config), config.model_dump_json(), str(config.model_dump())):
        assert KEY not in text
    monkeypatch.setenv(KEY_ENV, KEY)
    pipeline = PipelineConfig(llm={"base_url": server.base_url, "api_key_env": KEY_ENV})
    assert KEY not in repr(pipeline) and KEY not in pipeline.model_dump_json()
    assert pipeline.llm.resolve_key().get_secret_value() == KEY  # read from the environment, at call time
    async with ChatClient(config) as client:
        assert KEY not in repr(client.model) and KEY not in repr(vars(client.model))
    # An exception raised while calling (here: the key refused) does not carry the key.
    server.configure(api_key="another")
    try:
        async with KnowledgeBuilder(config, rounds=0, retry=0, progress=False) as builder:
            report = await builder.abuild(make_posts(1, prefix="repr"))
    finally:
        server.configure(api_key=None)
    (failure,) = report.failures
    assert failure.kind == "auth" and not failure.retryable
    assert KEY not in failure.model_dump_json()
