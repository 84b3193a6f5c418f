"""A Chroma store of labelled demonstrations, queried by a weighted text + image-description similarity.

Layout: one Chroma record per demonstration, whose vector is the concatenation ``[e(text); e(image)]``
of the two unit-length embeddings (2 x the model's dimension), in a collection with inner-product
distance. A query vector ``[w_t q(text); w_i q(image)]`` then has the dot product
``w_t cos(text) + w_i cos(image)`` with every record: one nearest-neighbour query ranks by the weighted
similarity, with weights chosen per query, and no candidate merging across two collections. Every
stored vector has the same norm (sqrt 2), so the HNSW graph built on inner products is a cosine graph.
The two halves stay separable: each result reports its text and its image-description similarity.

A demonstration without an image description is indexed by its text alone (its image half is zero, so
its image similarity is 0 and reported as None), and a query without one is ranked by text alone
(image weight 0): posts without images, common in users' own data, are retrieved on every path.

The document is the post's text; the metadata hold the image description, the gold quintuples (JSON),
the human answer when there is one, and the source. The collection's metadata record the embedding
model id and dimension, checked whenever the store is opened.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from langchain_core.embeddings import Embeddings
from pydantic import BaseModel, ConfigDict, Field

from ..errors import DataError, Problem
from ..records import Demonstration, Post, Quintuple
from .config import SelectionConfig, StoreConfig
from .embeddings import MiniLMEmbeddings, default_embeddings, describe_embeddings, encode_texts, unit_rows
from .errors import EmbeddingMismatchError, QueryError, StoreError, StoreUnavailableError

if TYPE_CHECKING:
    import numpy.typing as npt
    from langchain_chroma import Chroma

__all__ = ["LAYOUT", "AddReport", "DemonstrationStore", "ScoredDemonstration"]

#: The vector layout this module writes; recorded in the collection so a future layout is not misread.
LAYOUT = "text+image_description/concat-v1"
_META_MODEL = "kecpm_embedding_model"
_META_DIM = "kecpm_embedding_dim"
_META_LAYOUT = "kecpm_layout"

T = TypeVar("T")


class ScoredDemonstration(BaseModel):
    """A selected demonstration with its weighted score and the two similarities it is made of."""

    model_config = ConfigDict(frozen=True)

    demonstration: Demonstration
    score: float
    text_similarity: float
    image_similarity: float | None  # None when the query or the demonstration has no image description


class AddReport(BaseModel):
    """What :meth:`DemonstrationStore.add` wrote, and what it skipped and why."""

    added: list[str] = Field(default_factory=list)
    text_only: list[str] = Field(default_factory=list, description="added without an image description")
    problems: list[Any] = Field(default_factory=list)  # kecpm.errors.Problem


def _transient_errors() -> tuple[type[BaseException], ...]:
    import httpx

    return (httpx.TransportError, ConnectionError)


class _PairQueryEmbeddings(Embeddings):
    """Lets LangChain's ``Chroma`` query the two-part vectors with one string, which stands for both
    the text and the image description."""

    def __init__(self, embeddings: Embeddings, weights: tuple[float, float]) -> None:
        self.embeddings = embeddings
        self.weights = weights

    def embed_query(self, text: str) -> list[float]:
        vector = encode_texts(self.embeddings, [text], query=True)[0]
        return np.concatenate([self.weights[0] * vector, self.weights[1] * vector]).tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise NotImplementedError(
            "add demonstrations with DemonstrationStore.add: each needs text and image description"
        )


class DemonstrationStore:
    """Labelled demonstrations in Chroma, selected by weighted text + image-description similarity.

    ``config`` is a :class:`StoreConfig`, or a directory / ``http://host:port`` string. ``embeddings``
    is any LangChain embeddings (default: offline all-MiniLM-L6-v2). With ``create=False`` the store
    must exist; ``create=True`` makes the collection when it is missing.

    >>> store = DemonstrationStore("runs/demos", create=True)  # doctest: +SKIP
    >>> store.add(load_pool("human"))  # doctest: +SKIP
    >>> store.select("Mara and Theo are engaged", caption="a couple smiling", k=2)  # doctest: +SKIP
    [Demonstration(id='human-...', ...), Demonstration(...)]
    >>> await store.aselect(post, k=2)  # a Post: its text, its image description, itself excluded  # doctest: +SKIP
    """

    def __init__(
        self,
        config: StoreConfig | str | Path,
        embeddings: Embeddings | None = None,
        *,
        create: bool = False,
        selection: SelectionConfig | None = None,
    ) -> None:
        self.config = config if isinstance(config, StoreConfig) else StoreConfig.from_location(config)
        self.embeddings = embeddings if embeddings is not None else default_embeddings()
        self.selection = selection or SelectionConfig()
        self.model_id, self.dimension = describe_embeddings(self.embeddings)
        self._client = self._connect(create)
        self._collection = self._open_collection(create)

    def __repr__(self) -> str:
        return (
            f"DemonstrationStore({self.config.location!r}, collection={self.config.collection!r}, "
            f"model={self.model_id!r})"
        )

    # -- connection -----------------------------------------------------------------------------

    def _call(self, what: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one Chroma call, retrying transport errors (a server that dropped) with backoff."""
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

        transient = _transient_errors()
        retrying = Retrying(
            stop=stop_after_attempt(self.config.retry_attempts),
            wait=wait_exponential(multiplier=self.config.retry_wait_s, max=4),
            retry=retry_if_exception_type(transient),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return function(*args, **kwargs)
        except transient as exc:
            raise StoreUnavailableError(
                f"{self.config.location}: {what} failed after {self.config.retry_attempts} attempts "
                f"({type(exc).__name__}: {exc}); is the Chroma server running?"
            ) from exc
        raise AssertionError("unreachable")  # Retrying either returns or raises

    def _connect(self, create: bool) -> Any:
        import chromadb
        from chromadb.config import Settings

        settings = Settings(anonymized_telemetry=False)
        if self.config.host is not None:
            try:
                return self._call(
                    "connecting",
                    chromadb.HttpClient,
                    host=self.config.host,
                    port=self.config.port,
                    ssl=self.config.ssl,
                    headers=self.config.headers,
                    settings=settings,
                )
            except ValueError as exc:  # chromadb's "Could not connect to a Chroma server"
                raise StoreUnavailableError(f"{self.config.location}: cannot reach the Chroma server ({exc})") from exc
        path = self.config.path
        assert path is not None
        if path.exists() and not path.is_dir():
            raise StoreError(f"{path}: a file, not a Chroma store directory")
        has_database = (path / "chroma.sqlite3").is_file()
        if not has_database and path.is_dir() and any(path.iterdir()):
            raise StoreError(
                f"{path}: not a Chroma store (no chroma.sqlite3, and the directory is not empty); "
                "give a store directory, or a new or empty one to build into"
            )
        if not has_database and not create:
            raise StoreError(f"{path}: no store here; build one first (kecpm index build --store {path})")
        path.mkdir(parents=True, exist_ok=True)
        try:
            return chromadb.PersistentClient(path=str(path), settings=settings)
        except Exception as exc:  # chromadb raises its InternalError on a broken database
            raise StoreError(f"{path}: cannot open the Chroma store ({type(exc).__name__}: {exc})") from exc

    def _open_collection(self, create: bool) -> Any:
        from chromadb.errors import NotFoundError

        name = self.config.collection
        try:
            # embedding_function=None everywhere: Chroma's default one downloads a model.
            collection = self._call(
                "opening the collection", self._client.get_collection, name, embedding_function=None
            )
        except NotFoundError:
            if not create:
                raise StoreError(
                    f"{self.config.location}: no collection {name!r}; build it first (kecpm index build)"
                ) from None
            return self._call(
                "creating the collection",
                self._client.create_collection,
                name,
                embedding_function=None,
                metadata={_META_MODEL: self.model_id, _META_DIM: self.dimension, _META_LAYOUT: LAYOUT},
                configuration={
                    "hnsw": {
                        "space": "ip",
                        "ef_search": self.config.hnsw_ef_search,
                        "ef_construction": self.config.hnsw_ef_construction,
                        "max_neighbors": self.config.hnsw_max_neighbors,
                    }
                },
            )
        metadata = collection.metadata or {}
        if _META_MODEL not in metadata:
            raise StoreError(
                f"{self.config.location}: collection {name!r} was not built by kecpm (no embedding model recorded)"
            )
        stored = (metadata[_META_MODEL], metadata.get(_META_DIM))
        if stored != (self.model_id, self.dimension):
            raise EmbeddingMismatchError(
                f"{self.config.location}: collection {name!r} was built with {stored[0]} ({stored[1]} dimensions), "
                f"but opened with {self.model_id} ({self.dimension} dimensions); open it with the same embeddings, "
                "or build another store"
            )
        if metadata.get(_META_LAYOUT) != LAYOUT:
            raise StoreError(
                f"{self.config.location}: collection {name!r} has vector layout {metadata.get(_META_LAYOUT)!r}, "
                f"this version reads {LAYOUT!r}; rebuild it"
            )
        return collection

    @property
    def vectorstore(self) -> Chroma:
        """The collection as a LangChain ``Chroma`` vector store, for ``as_retriever()`` and the like.

        A plain string query stands for both the text and the image description (weighted by
        ``self.selection``); adding goes through :meth:`add`, which embeds both parts.
        """
        from langchain_chroma import Chroma

        return Chroma(
            client=self._client,
            collection_name=self.config.collection,
            embedding_function=_PairQueryEmbeddings(self.embeddings, self.selection.weights),
            create_collection_if_not_exists=False,
        )

    # -- writing --------------------------------------------------------------------------------

    def count(self) -> int:
        """How many demonstrations the store holds."""
        return self._call("counting", self._collection.count)

    async def acount(self) -> int:
        return await asyncio.to_thread(self.count)

    @staticmethod
    def _check(demonstrations: Iterable[Demonstration]) -> tuple[list[Demonstration], list[Problem]]:
        valid: list[Demonstration] = []
        problems: list[Problem] = []
        seen: set[str] = set()
        for position, demo in enumerate(demonstrations, start=1):
            if not isinstance(demo, Demonstration):
                problems.append(Problem(f"not a Demonstration but {type(demo).__name__}", line=position))
            elif not demo.text.strip():
                problems.append(Problem("empty text", record=demo.id))
            elif demo.id in seen:
                problems.append(Problem("the same id twice in one batch", record=demo.id))
            else:
                seen.add(demo.id)
                valid.append(demo)
        return valid, problems

    def _write(
        self, chunk: list[Demonstration], text_vectors: npt.NDArray[np.float32], image_vectors: npt.NDArray[np.float32]
    ) -> None:
        self._call(
            "adding demonstrations",
            self._collection.upsert,
            ids=[d.id for d in chunk],
            embeddings=np.hstack([text_vectors, image_vectors]),
            documents=[d.text for d in chunk],
            metadatas=[_metadata(d) for d in chunk],
        )

    @staticmethod
    def _parts(chunk: list[Demonstration]) -> list[str]:
        """What to embed for a chunk: every text, then the image descriptions there are."""
        return [d.text for d in chunk] + [d.image_description for d in chunk if d.image_description.strip()]

    @staticmethod
    def _halves(
        chunk: list[Demonstration], vectors: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """The text and image halves of a chunk's vectors; a missing image description's half is zero."""
        texts = vectors[: len(chunk)]
        images = np.zeros_like(texts)
        with_image = [i for i, d in enumerate(chunk) if d.image_description.strip()]
        images[with_image] = vectors[len(chunk) :]
        return texts, images

    def add(
        self, demonstrations: Iterable[Demonstration], *, skip_invalid: bool = False, batch_size: int = 256
    ) -> AddReport:
        """Embed and write demonstrations (an existing id is replaced, so a rebuild is idempotent).

        Every demonstration needs a non-empty text; one without an image description is indexed by its
        text alone (listed in the report's ``text_only``). Bad ones raise a
        :class:`~kecpm.errors.DataError` naming each, before anything is written; with ``skip_invalid``
        the good ones are written and the bad ones listed in the report.
        """
        valid, problems = self._check(demonstrations)
        if problems and not skip_invalid:
            raise DataError(problems)
        for start in range(0, len(valid), batch_size):
            chunk = valid[start : start + batch_size]
            self._write(chunk, *self._halves(chunk, encode_texts(self.embeddings, self._parts(chunk))))
        return _report(valid, problems)

    async def aadd(
        self, demonstrations: Iterable[Demonstration], *, skip_invalid: bool = False, batch_size: int = 256
    ) -> AddReport:
        """Async :meth:`add`: remote embeddings are awaited (``aembed_documents``), local work runs in a thread."""
        valid, problems = self._check(demonstrations)
        if problems and not skip_invalid:
            raise DataError(problems)
        for start in range(0, len(valid), batch_size):
            chunk = valid[start : start + batch_size]
            parts = self._parts(chunk)
            if isinstance(self.embeddings, MiniLMEmbeddings):
                vectors = await asyncio.to_thread(self.embeddings.encode, parts)
            else:
                vectors = unit_rows(await self.embeddings.aembed_documents(parts))
            await asyncio.to_thread(self._write, chunk, *self._halves(chunk, vectors))
        return _report(valid, problems)

    def get(self, ids: Sequence[str]) -> list[Demonstration]:
        """The stored demonstrations with these ids (missing ids are left out), in the order given."""
        found = self._call("reading", self._collection.get, ids=list(ids), include=["documents", "metadatas"])
        by_id = {
            i: _demonstration(i, doc, meta)
            for i, doc, meta in zip(found["ids"], found["documents"], found["metadatas"], strict=True)
        }
        return [by_id[i] for i in ids if i in by_id]

    # -- selecting ------------------------------------------------------------------------------

    def _query_parts(
        self, query: Post | str, caption: str | None, exclude_ids: Iterable[str], exclude_self: bool
    ) -> tuple[str, str, set[str]]:
        exclude = set(exclude_ids)
        if isinstance(query, Post):
            text, image = query.text, query.image_description if caption is None else caption
            if exclude_self:
                exclude.add(query.id)
        else:
            text, image = query, caption or ""
        if not text.strip():
            raise QueryError("the query text is empty")
        return text, image.strip(), exclude

    def _selection(self, k: int | None, selection: SelectionConfig | None, image: str) -> SelectionConfig:
        chosen = selection or self.selection
        if k is not None:
            chosen = SelectionConfig.model_validate({**chosen.model_dump(), "k": k})
        if not image and chosen.image_weight > 0:
            # No image description: rank by text alone rather than refuse (posts without images are common).
            chosen = chosen.model_copy(update={"text_weight": 1.0, "image_weight": 0.0})
        return chosen

    def _nearest(
        self,
        text_vector: npt.NDArray[np.float32],
        image_vector: npt.NDArray[np.float32] | None,
        selection: SelectionConfig,
        exclude: set[str],
    ) -> list[ScoredDemonstration]:
        w_text, w_image = selection.weights
        if image_vector is None:
            image_vector = np.zeros_like(text_vector)
        query = np.concatenate([w_text * text_vector, w_image * image_vector])
        wanted = (max(selection.fetch_k, selection.k) if selection.mmr else selection.k) + len(exclude)
        found = self._call(
            "querying",
            self._collection.query,
            query_embeddings=[query],
            n_results=wanted,
            include=["documents", "metadatas", "embeddings"],
        )
        rows = [
            (i, doc, meta, vector)
            for i, doc, meta, vector in zip(
                found["ids"][0], found["documents"][0], found["metadatas"][0], found["embeddings"][0], strict=True
            )
            if i not in exclude
        ]
        if not rows:
            if self.count() == 0:
                raise StoreError(f"{self.config.location}: the store holds no demonstrations; add some first")
            return []
        vectors = np.asarray([row[3] for row in rows], dtype=np.float32)
        dim = self.dimension
        text_sim = vectors[:, :dim] @ text_vector
        image_sim = vectors[:, dim:] @ image_vector
        score = w_text * text_sim + w_image * image_sim
        if selection.mmr:
            pair_sim = w_text * vectors[:, :dim] @ vectors[:, :dim].T + w_image * vectors[:, dim:] @ vectors[:, dim:].T
            order = _mmr(score, pair_sim, selection.k, selection.mmr_lambda)
        else:
            order = [int(i) for i in np.argsort(-score, kind="stable")[: selection.k]]
        # An image similarity needs an image description on both sides.
        has_image = np.any(vectors[:, dim:], axis=1) & bool(np.any(image_vector))
        return [
            ScoredDemonstration(
                demonstration=_demonstration(rows[i][0], rows[i][1], rows[i][2]),
                score=float(score[i]),
                text_similarity=float(text_sim[i]),
                image_similarity=float(image_sim[i]) if has_image[i] else None,
            )
            for i in order
        ]

    def search(
        self,
        query: Post | str,
        *,
        caption: str | None = None,
        k: int | None = None,
        selection: SelectionConfig | None = None,
        exclude_ids: Iterable[str] = (),
        exclude_self: bool = True,
    ) -> list[ScoredDemonstration]:
        """The best demonstrations for a query, with their scores (best first).

        ``query`` is a :class:`~kecpm.records.Post` (its text and image description; its own id is
        excluded unless ``exclude_self=False``) or a text, with ``caption`` as its image description.
        """
        text, image, exclude = self._query_parts(query, caption, exclude_ids, exclude_self)
        chosen = self._selection(k, selection, image)
        vectors = encode_texts(self.embeddings, [text, image] if image else [text], query=True)
        return self._nearest(vectors[0], vectors[1] if image else None, chosen, exclude)

    async def asearch(
        self,
        query: Post | str,
        *,
        caption: str | None = None,
        k: int | None = None,
        selection: SelectionConfig | None = None,
        exclude_ids: Iterable[str] = (),
        exclude_self: bool = True,
    ) -> list[ScoredDemonstration]:
        """Async :meth:`search`: embedding and the Chroma query run off the event loop."""
        text, image, exclude = self._query_parts(query, caption, exclude_ids, exclude_self)
        chosen = self._selection(k, selection, image)
        parts = [text, image] if image else [text]
        if isinstance(self.embeddings, MiniLMEmbeddings):
            vectors = await asyncio.to_thread(self.embeddings.encode, parts)
        else:
            vectors = unit_rows(await asyncio.gather(*(self.embeddings.aembed_query(part) for part in parts)))
        return await asyncio.to_thread(self._nearest, vectors[0], vectors[1] if image else None, chosen, exclude)

    def select(
        self,
        query: Post | str,
        *,
        caption: str | None = None,
        k: int | None = None,
        selection: SelectionConfig | None = None,
        exclude_ids: Iterable[str] = (),
        exclude_self: bool = True,
    ) -> list[Demonstration]:
        """The ``k`` best demonstrations for a query (best first); see :meth:`search`."""
        found = self.search(
            query, caption=caption, k=k, selection=selection, exclude_ids=exclude_ids, exclude_self=exclude_self
        )
        return [hit.demonstration for hit in found]

    async def aselect(
        self,
        query: Post | str,
        *,
        caption: str | None = None,
        k: int | None = None,
        selection: SelectionConfig | None = None,
        exclude_ids: Iterable[str] = (),
        exclude_self: bool = True,
    ) -> list[Demonstration]:
        """Async :meth:`select`."""
        found = await self.asearch(
            query, caption=caption, k=k, selection=selection, exclude_ids=exclude_ids, exclude_self=exclude_self
        )
        return [hit.demonstration for hit in found]


def _report(valid: list[Demonstration], problems: list[Problem]) -> AddReport:
    text_only = [d.id for d in valid if not d.image_description.strip()]
    return AddReport(added=[d.id for d in valid], text_only=text_only, problems=problems)


def _mmr(relevance: npt.NDArray[np.float32], similarity: npt.NDArray[np.float32], k: int, lam: float) -> list[int]:
    """Maximal marginal relevance: greedily the candidate with the best
    ``lam * relevance - (1 - lam) * max similarity to those already chosen``."""
    chosen = [int(np.argmax(relevance))]
    while len(chosen) < min(k, len(relevance)):
        penalty = similarity[:, chosen].max(axis=1)
        value = lam * relevance - (1 - lam) * penalty
        value[chosen] = -np.inf
        chosen.append(int(np.argmax(value)))
    return chosen


def _metadata(demo: Demonstration) -> dict[str, str]:
    metadata = {
        "image_description": demo.image_description,
        "quintuples": json.dumps([q.model_dump(mode="json") for q in demo.quintuples], ensure_ascii=False),
        "source": demo.source,
    }
    if demo.answer is not None:
        metadata["answer"] = demo.answer
    return metadata


def _demonstration(demo_id: str, text: str, metadata: dict[str, Any]) -> Demonstration:
    return Demonstration(
        id=demo_id,
        text=text,
        image_description=metadata.get("image_description", ""),
        quintuples=tuple(Quintuple.model_validate(q) for q in json.loads(metadata.get("quintuples", "[]"))),
        answer=metadata.get("answer"),
        source=metadata.get("source", ""),
    )
