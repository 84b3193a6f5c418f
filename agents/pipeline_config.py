"""The pipeline's configuration: one pydantic object, from code, a TOML/YAML file, or the environment.

A file holds the fields below at its top level (or under a ``[pipeline]`` table)::

    store = "runs/demo/store"        # a folder (embedded Chroma) or http://HOST:PORT; omit for no demonstrations
    extractor = "runs/demo/model"    # a model folder written by `kecpm train` / `kecpm run`
    rounds = 1
    [selection]
    k = 2
    text_weight = 0.5
    image_weight = 0.5
    [llm]                            # omit base_url for the embedded SmolLM2 (offline)
    base_url = "https://api.openai.com/v1"
    model = "gpt-4o-mini"
    api_key_env = "OPENAI_API_KEY"   # the key itself never goes into a file

Environment variables ``KECPM_<FIELD>`` (nested with ``__``: ``KECPM_LLM__MODEL``,
``KECPM_SELECTION__K``) fill what the file or the code leave unset; explicit values win.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..retrieval.config import SelectionConfig
from ..settings_file import read_settings_file, resolve_path
from .llm import LLMConfig

__all__ = ["PipelineConfig"]


class PipelineConfig(BaseSettings):
    """What the pipeline is made of: the store, the LLM, the templates, the rounds and the extractor."""

    model_config = SettingsConfigDict(
        env_prefix="KECPM_", env_nested_delimiter="__", extra="forbid", frozen=True, populate_by_name=True
    )

    store: str | None = Field(default=None, description="demonstration store: a folder or http://HOST:PORT")
    collection: str = "kecpm-demonstrations"
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig.from_env)
    rounds: int = Field(default=1, ge=0, description="critique/revise rounds; 0 = generate only")
    concurrency: int = Field(default=4, ge=1, description="posts in flight in batch work")
    retries: int = Field(default=4, ge=0, description="retries of a failed LLM call (429, 5xx, timeouts)")
    templates: dict[str, str] = Field(default_factory=dict, description="stage -> template ref, e.g. generate@v2")
    template_dirs: list[Path] = Field(default_factory=list, description="folders searched for templates first")
    describe_template: str = Field(default="describe_image", description="template that asks for an image caption")
    knowledge_cache: Path | None = Field(default=None, description="SQLite cache of LLM calls (none: no cache)")
    extractor: Path | None = Field(default=None, description="a trained extractor's folder")

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> PipelineConfig:
        """Read a ``.toml``, ``.yaml`` or ``.yml`` file; relative paths in it are taken from the file's folder."""
        path = Path(path)
        data = read_settings_file(path)
        data = dict(data.get("pipeline", data))
        for key in ("knowledge_cache", "extractor"):
            if data.get(key):
                data[key] = resolve_path(path.parent, data[key])
        if data.get("store") and "://" not in str(data["store"]):
            data["store"] = str(resolve_path(path.parent, data["store"]))
        if data.get("template_dirs"):
            data["template_dirs"] = [resolve_path(path.parent, d) for d in data["template_dirs"]]
        data.update(overrides)
        return cls(**data)
