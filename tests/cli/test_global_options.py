"""The options before any command: ``kecpm --version`` and ``kecpm --log-level``."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import kecpm
from kecpm.cli import app, configure_logging

runner = CliRunner()


def test_version_prints_the_package_version_and_exits():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"kecpm {kecpm.__version__}\n"


def test_version_of_the_installed_command_in_a_fresh_process():
    result = subprocess.run([sys.executable, "-m", "kecpm", "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"kecpm {kecpm.__version__}"


@pytest.fixture
def kecpm_logger():
    logger = logging.getLogger("kecpm")
    level, handlers = logger.level, list(logger.handlers)
    yield logger
    logger.setLevel(level)
    logger.handlers[:] = handlers


@pytest.mark.parametrize(("given", "level"), [("debug", logging.DEBUG), ("WARNING", logging.WARNING), ("error", 40)])
def test_log_level_sets_kecpm_loggers_only(kecpm_logger, given, level):
    result = runner.invoke(app, ["--log-level", given, "models", "list"])
    assert result.exit_code in (0, 1), result.output  # 1 only when a default model is missing
    assert kecpm_logger.level == level
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING  # other libraries keep Python's default


def test_log_level_comes_from_the_environment_too(kecpm_logger, monkeypatch):
    monkeypatch.setenv("KECPM_LOG_LEVEL", "debug")
    runner.invoke(app, ["models", "list"])
    assert kecpm_logger.level == logging.DEBUG


def test_an_unknown_log_level_is_refused_with_the_choices():
    result = runner.invoke(app, ["--log-level", "loud", "models", "list"])
    assert result.exit_code == 2
    assert "loud" in result.output and "debug" in result.output


def test_configured_twice_one_handler_and_records_reach_stderr(kecpm_logger, capsys):
    configure_logging("info")
    configure_logging("debug")
    ours = [h for h in kecpm_logger.handlers if type(h).__name__ == "_StderrHandler"]
    assert len(ours) == 1
    logging.getLogger("kecpm.extractor").debug("a debug line")
    assert "DEBUG kecpm.extractor: a debug line" in capsys.readouterr().err
    configure_logging("warning")
    logging.getLogger("kecpm.extractor").info("hidden")
    assert "hidden" not in capsys.readouterr().err
