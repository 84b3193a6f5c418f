"""The demonstration store as a LangChain retriever: Documents of the most similar labelled posts.

Each Document's ``page_content`` is the demonstration's text; its metadata holds the demonstration
(``demonstration``: id, text, image description, quintuples, answer, source), its ``score`` and its
``text_similarity`` / ``image_similarity`` (None when either side has no image description). The query
post itself is never returned: a stored demonstration with the query's exact text is left out, and so
are the ids in ``search_kwargs["exclude_ids"]``.

``search_kwargs`` takes ``k``, ``text_weight``, ``image_weight``, ``mmr``, ``fetch_k``, ``mmr_lambda``
(the :class:`SelectionConfig` fields), ``caption`` (the query's image description) and ``exclude_ids``.

>>> retriever = DemonstrationRetriever(store=store, search_kwargs={"k": 3, "image_weight": 0.0})  # doctest: +SKIP
>>> docs = await retriever.ainvoke("Mira Holt signs with Corvex Labs")  # doctest: +SKIP
>>> tool = create_retriever_tool(retriever, "demonstrations", "Annotated posts like this one")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from .config import SelectionConfig
from .errors import QueryError
from .store import DemonstrationStore, ScoredDemonstration

__all__ = ["DemonstrationRetriever"]

_SEARCH_KEYS = {"caption", "exclude_ids"}


class DemonstrationRetriever(BaseRetriever):
    """Demonstrations most similar to a query text, from a :class:`DemonstrationStore`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: DemonstrationStore
    search_kwargs: dict[str, Any] = Field(default_factory=dict)

    def _query(self, query: str) -> tuple[dict[str, Any], int]:
        options = dict(self.search_kwargs)
        unknown = set(options) - _SEARCH_KEYS - set(SelectionConfig.model_fields)
        if unknown:
            known = ", ".join(sorted(_SEARCH_KEYS | set(SelectionConfig.model_fields)))
            raise QueryError(f"unknown search_kwargs {sorted(unknown)}; known: {known}")
        if not query.strip():
            raise QueryError("the query text is empty")
        fields = {k: options.pop(k) for k in list(options) if k in SelectionConfig.model_fields}
        selection = SelectionConfig.model_validate({**self.store.selection.model_dump(), **fields})
        exclude = set(options.pop("exclude_ids", ()))
        # One more than asked: the query post itself may be stored, and is dropped below.
        wider = selection.model_copy(update={"k": selection.k + 1})
        return {"selection": wider, "exclude_ids": exclude, "caption": options.get("caption")}, selection.k

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        options, k = self._query(query)
        return _documents(query, self.store.search(query, **options), k)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        options, k = self._query(query)
        return _documents(query, await self.store.asearch(query, **options), k)


def _documents(query: str, found: list[ScoredDemonstration], k: int) -> list[Document]:
    same = " ".join(query.split())
    kept = [hit for hit in found if " ".join(hit.demonstration.text.split()) != same][:k]
    return [
        Document(
            id=hit.demonstration.id,
            page_content=hit.demonstration.text,
            metadata={
                "id": hit.demonstration.id,
                "image_description": hit.demonstration.image_description,
                "demonstration": hit.demonstration.model_dump(mode="json"),
                "score": hit.score,
                "text_similarity": hit.text_similarity,
                "image_similarity": hit.image_similarity,
            },
        )
        for hit in kept
    ]
