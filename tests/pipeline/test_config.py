import pytest

from kecpm.errors import KecpmError
from kecpm.pipeline import PipelineConfig

TOML = """
store = "store"
extractor = "model"
rounds = 2
[selection]
k = 3
text_weight = 1.0
image_weight = 0.0
[llm]
base_url = "http://127.0.0.1:9/v1"
model = "tiny"
api_key_env = "MY_LLM_KEY"
"""


def test_toml_file_with_paths_relative_to_the_file(tmp_path):
    path = tmp_path / "pipeline.toml"
    path.write_text(TOML)
    config = PipelineConfig.from_file(path)
    assert config.store == str(tmp_path / "store") and config.extractor == tmp_path / "model"
    assert config.rounds == 2 and config.selection.k == 3 and config.selection.weights == (1.0, 0.0)
    assert config.llm.model == "tiny" and config.llm.api_key_env == "MY_LLM_KEY"


def test_yaml_file_under_a_pipeline_table_and_overrides(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text("pipeline:\n  store: http://127.0.0.1:8000\n  rounds: 0\n  templates:\n    generate: generate@v2\n")
    config = PipelineConfig.from_file(path, rounds=1)
    assert config.store == "http://127.0.0.1:8000"  # a URL is not a path
    assert config.rounds == 1 and config.templates == {"generate": "generate@v2"}


def test_environment_fills_what_the_code_leaves_unset(monkeypatch):
    monkeypatch.setenv("KECPM_SELECTION__K", "4")
    monkeypatch.setenv("KECPM_ROUNDS", "3")
    config = PipelineConfig(rounds=1)
    assert config.selection.k == 4 and config.rounds == 1


def test_bad_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such config file"):
        PipelineConfig.from_file(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("rounds = [")
    with pytest.raises(KecpmError, match=r"broken\.toml: not a valid config file"):
        PipelineConfig.from_file(broken)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("rounds: [1\n")
    with pytest.raises(KecpmError, match=r"bad\.yaml: not a valid config file"):
        PipelineConfig.from_file(bad_yaml)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("roundz = 1\n")
    with pytest.raises(ValueError, match="roundz"):
        PipelineConfig.from_file(unknown)
    ini = tmp_path / "pipeline.ini"
    ini.write_text("rounds = 1\n")
    with pytest.raises(KecpmError, match="must end in"):
        PipelineConfig.from_file(ini)
