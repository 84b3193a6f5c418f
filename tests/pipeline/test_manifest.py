from pydantic import BaseModel, SecretStr

from kecpm.hashing import file_sha256
from kecpm.pipeline import Manifest, redact


class _LLM(BaseModel):
    base_url: str = "http://127.0.0.1:1/v1"
    api_key: SecretStr = SecretStr("sk-planted-secret-value")


def test_redact_removes_secret_values_and_secret_keys():
    cleaned = redact(
        {
            "llm": _LLM(),
            "headers": {"Authorization-Token": "abc"},
            "paths": ("a",),
            "api_key_env": "MY_KEY_VAR",
            "max_tokens_param": "max_tokens",
            "access_token": "tok-123",
        }
    )
    text = str(cleaned)
    assert "planted" not in text and "abc" not in text and "tok-123" not in text
    # Names that merely contain a secret word are settings, kept so a manifest's config can be reloaded.
    assert cleaned["api_key_env"] == "MY_KEY_VAR" and cleaned["max_tokens_param"] == "max_tokens"
    assert cleaned["llm"]["base_url"] == "http://127.0.0.1:1/v1"
    assert cleaned["paths"] == ["a"]


def test_manifest_round_trip_hashes_inputs_and_hides_keys(tmp_path):
    data = tmp_path / "train.json"
    data.write_text("[]")
    manifest = Manifest.create(
        "test", config={"llm": _LLM()}, inputs=[data], models={"llm": "tiny"}, templates={"generate": "generate@v1"}
    )
    path = manifest.write(tmp_path / "out" / "manifest.json")
    assert "planted" not in path.read_text()
    loaded = Manifest.read(path)
    assert loaded.inputs == {str(data): file_sha256(data)}
    assert loaded.templates["generate"] == "generate@v1" and loaded.kecpm_version


def test_only_real_secrets_are_redacted_never_provenance_keys():
    config = {
        "stages": {"index": {"key": "0123456789abcdef"}, "train": {"key": "fedcba9876543210"}},
        "stage_key": "aa11",
        "cache_key": "bb22",
        "run_key": "cc33",
        "key": "dd44",
        "api_key": "sk-1",
        "apikey": "sk-2",
        "token": "t-1",
        "password": "p-1",
        "client_secret": "s-1",
        "headers": {"Authorization": "Bearer b-1", "X-Api-Key": "k-1", "Accept": "application/json"},
    }
    cleaned = redact(config)
    assert cleaned["stages"] == config["stages"]
    assert [cleaned[k] for k in ("stage_key", "cache_key", "run_key", "key")] == ["aa11", "bb22", "cc33", "dd44"]
    for name in ("api_key", "apikey", "token", "password", "client_secret"):
        assert cleaned[name] == "**********", name
    assert cleaned["headers"] == {
        "Authorization": "**********",
        "X-Api-Key": "**********",
        "Accept": "application/json",
    }
