"""The extractor as a LangChain ``StructuredTool``: an agent passes text, image description and
knowledge, and gets the quintuples back (sync and async paths)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ..predictions import PredictedQuintuple
from ..records import PostContent
from .base import Extractor

if TYPE_CHECKING:
    from langchain_core.tools import StructuredTool

    from .span_pair import SpanPairEnsemble

__all__ = ["ExtractionInput", "ExtractionResult", "make_extraction_tool"]

TOOL_DESCRIPTION = (
    "Extract (head entity, head type, tail entity, tail type, relation) quintuples from a social-media "
    "post. Pass the post's text, a description of its image if known, and background knowledge "
    "sentences if known."
)


class ExtractionInput(PostContent):
    """The tool's arguments: the post's text, its image description and background knowledge, if known."""


class ExtractionResult(BaseModel):
    """The tool's result: the quintuples found (types and relations in the dataset's names)."""

    quintuples: list[PredictedQuintuple]


def make_extraction_tool(
    extractor: Extractor | SpanPairEnsemble, *, name: str = "extract_quintuples", description: str = TOOL_DESCRIPTION
) -> StructuredTool:
    """A ``StructuredTool`` around a trained extractor (or an ensemble of span-pair models), sync
    (``func``) and async (``coroutine``: the model runs in a worker thread). It returns
    ``content_and_artifact``: the model reads the quintuples as JSON text, and the ToolMessage's ``artifact``
    is the :class:`ExtractionResult`.

    >>> tool = make_extraction_tool(load_extractor("runs/model"))  # doctest: +SKIP
    >>> json.loads(tool.invoke({"text": "Alva Brenner signs with Oakline FC"}))["quintuples"]  # doctest: +SKIP
    """
    from langchain_core.tools import StructuredTool

    def extract(
        text: str, image_description: str = "", knowledge: list[str] | None = None
    ) -> tuple[str, ExtractionResult]:
        post = ExtractionInput(text=text, image_description=image_description, knowledge=knowledge or []).to_post()
        return _result(extractor.predict([post])[0])

    async def aextract(
        text: str, image_description: str = "", knowledge: list[str] | None = None
    ) -> tuple[str, ExtractionResult]:
        post = ExtractionInput(text=text, image_description=image_description, knowledge=knowledge or []).to_post()
        return _result((await extractor.apredict([post]))[0])

    return StructuredTool.from_function(
        func=extract,
        coroutine=aextract,
        name=name,
        description=description,
        args_schema=ExtractionInput,
        response_format="content_and_artifact",
    )


def _result(quintuples: list[Any]) -> tuple[str, ExtractionResult]:
    result = ExtractionResult(quintuples=[PredictedQuintuple.from_quintuple(q) for q in quintuples])
    return result.model_dump_json(exclude_none=True), result
