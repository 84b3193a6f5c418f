"""The pipeline's configuration: one pydantic object, from code, a TOML/YAML file, or the environment.

A file holds the fields below at its top level (or under a ``[pipeline]`` table)::

    store = "runs/demo/store"        # a folder (embedded Chroma) or http://HOST:PORT; omit for no demonstrations
    extractor = "runs/demo/model"    # a model folder written by `kecpm train` / `kecpm run`
    rounds = 1
    ray = "auto"                     # batch work on a Ray cluster: auto, local or HOST:PORT (omit: this process)
    [selection]
    k = 2
    text_weight = 0.5
    image_weight = 0.5
    [llm]                            # omit base_url for the embedded SmolLM2 (offline)
    base_url = "https://api.openai.com/v1"
    model = "gpt-4o-mini"
    api_key_env = "OPENAI_API_KEY"   # the key itself never goes into a file
    input_price = 0.15               # per million tokens, for cost figures and a money budget
    output_price = 0.60
    [budget]                         # optional: the run stops before crossing it (cost and/or tokens)
    cost = 0.50
    [cluster]                        # with ray: how batch work spreads (kecpm.pipeline.ClusterSettings)
    workers = 4

Environment variables fill what the file or the code leave unset; explicit values win. The LLM's
settings are ``KECPM_LLM_<FIELD>`` (``KECPM_LLM_BASE_URL``, ``KECPM_LLM_MODEL``, ...; the one
convention of :mod:`kecpm.llm.config`), the others ``KECPM_<FIELD>``, nested with ``__``
(``KECPM_ROUNDS``, ``KECPM_SELECTION__K``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ..agents import Reflection, SpendLimit
from ..llm import LLMConfig
from ..retrieval.config import SelectionConfig
from ..settings_file import read_settings_file, resolve_path

__all__ = ["ClusterSettings", "PipelineConfig"]


class ClusterSettings(BaseModel):
    """How batch work spreads over a Ray cluster (used when the pipeline names one with ``ray``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workers: int | None = Field(
        default=None, ge=1, description="extractor replicas / knowledge tasks at a time (default: the cluster's CPUs)"
    )
    cpus_per_worker: float = Field(default=1.0, gt=0, description="CPUs each worker reserves (and torch threads)")
    batch_size: int = Field(default=64, ge=1, description="posts per extractor batch")
    chunk_size: int = Field(default=32, ge=1, description="posts per knowledge task (the unit Ray retries)")
    lease_s: float = Field(
        default=60.0, gt=0, description="seconds a call's lease outlives its holder: a lost node's calls wait this long"
    )
    requests_per_second: float | None = Field(
        default=None, gt=0, description="LLM calls started per second, for the whole cluster (none: no limit)"
    )


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
    reflection: Reflection = Field(
        default="revise",
        description="what a round does with its critique: revise (an LLM call) or drop_unsupported (keep the "
        "statements the critique does not mark unsupported)",
    )
    concurrency: int | None = Field(
        default=None, ge=1, description="posts in flight in batch work (default: 1 embedded, 16 for an endpoint)"
    )
    retries: int = Field(default=4, ge=0, description="retries of a failed LLM call (429, 5xx, timeouts)")
    templates: dict[str, str] = Field(default_factory=dict, description="stage -> template ref, e.g. generate@v2")
    template_dirs: list[Path] = Field(default_factory=list, description="folders searched for templates first")
    describe_template: str = Field(default="describe_image", description="template that asks for an image caption")
    knowledge_cache: Path | None = Field(default=None, description="SQLite cache of LLM calls (none: no cache)")
    extractor: Path | None = Field(default=None, description="a trained extractor's folder")
    ray: str | None = Field(
        default=None, description="a Ray cluster for batch work: auto, local or HOST:PORT (none: this process)"
    )
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    budget: SpendLimit | None = Field(
        default=None, description="most money (cost) and/or tokens the LLM calls may use; the run stops before"
    )

    @field_validator("llm", mode="before")
    @classmethod
    def _llm_over_environment(cls, value: Any) -> Any:
        # A table of LLM settings fills what it leaves unset from KECPM_LLM_*, like every other setting.
        return {**LLMConfig.env_values(), **value} if isinstance(value, Mapping) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _WithoutLLM(settings_cls, env_settings), dotenv_settings, file_secret_settings

    @property
    def workers(self) -> int:
        """Posts in flight: ``concurrency``, else 1 for the embedded LLM (it answers one request at a
        time) and 16 for an endpoint."""
        return self.concurrency or (1 if self.llm.embedded else 16)

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


class _WithoutLLM(PydanticBaseSettingsSource):
    """``KECPM_*`` for every field but ``llm``, which reads its own ``KECPM_LLM_*`` (so that no second
    spelling, ``KECPM_LLM__MODEL``, exists)."""

    def __init__(self, settings_cls: type[BaseSettings], source: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self.source = source

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return {name: value for name, value in self.source().items() if name != "llm"}
