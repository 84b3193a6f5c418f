"""Configuration of the demonstration store: where it lives, and how demonstrations are selected."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["SelectionConfig", "StoreConfig"]


class StoreConfig(BaseModel):
    """Where the store lives: a directory (embedded Chroma) or a Chroma server (``host``).

    >>> StoreConfig(path="runs/demos")  # doctest: +ELLIPSIS
    StoreConfig(path=PosixPath('runs/demos'), host=None, ...)
    >>> StoreConfig.from_location("http://127.0.0.1:8000").host
    '127.0.0.1'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path | None = None
    host: str | None = None
    port: int = Field(8000, ge=1, le=65535)
    ssl: bool = False
    headers: dict[str, str] | None = Field(default=None, repr=False)  # may carry a token: never shown
    collection: str = Field("kecpm-demonstrations", min_length=3, max_length=63)
    hnsw_ef_search: int = Field(100, ge=1)
    hnsw_ef_construction: int = Field(100, ge=1)
    hnsw_max_neighbors: int = Field(16, ge=2)
    retry_attempts: int = Field(4, ge=1)
    retry_wait_s: float = Field(0.25, ge=0)

    @model_validator(mode="after")
    def _one_place(self) -> Self:
        if (self.path is None) == (self.host is None):
            raise ValueError("give exactly one of path (an embedded store) and host (a Chroma server)")
        return self

    @classmethod
    def from_location(cls, location: str | Path, **options: Any) -> StoreConfig:
        """A directory, or ``http(s)://host:port`` for a Chroma server."""
        text = str(location)
        for scheme in ("http://", "https://"):
            if text.startswith(scheme):
                host, _, port = text.removeprefix(scheme).rstrip("/").partition(":")
                return cls(host=host, port=int(port) if port else 8000, ssl=scheme == "https://", **options)
        return cls(path=Path(text), **options)

    @property
    def location(self) -> str:
        if self.path is not None:
            return str(self.path)
        return f"{'https' if self.ssl else 'http'}://{self.host}:{self.port}"


class SelectionConfig(BaseModel):
    """How demonstrations are chosen: top ``k`` by ``text_weight * cos(text) + image_weight * cos(image)``
    (weights are normalised to sum to 1), optionally re-ranked by maximal marginal relevance over the
    ``fetch_k`` nearest (``mmr_lambda`` 1 = pure relevance, 0 = pure diversity)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    k: int = Field(2, ge=1)
    text_weight: float = Field(0.5, ge=0)
    image_weight: float = Field(0.5, ge=0)
    mmr: bool = False
    fetch_k: int = Field(20, ge=1)
    mmr_lambda: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _some_weight(self) -> Self:
        if self.text_weight + self.image_weight <= 0:
            raise ValueError("text_weight and image_weight cannot both be 0")
        return self

    @property
    def weights(self) -> tuple[float, float]:
        total = self.text_weight + self.image_weight
        return self.text_weight / total, self.image_weight / total
