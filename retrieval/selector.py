"""A LangChain example selector over a :class:`DemonstrationStore`, for ``FewShotPromptTemplate``."""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.example_selectors import BaseExampleSelector

from ..answers import parse_answer, render_answer
from ..records import Demonstration
from .config import SelectionConfig
from .pools import demonstration_id
from .store import DemonstrationStore

__all__ = ["DemonstrationExampleSelector", "demonstration_example"]


def demonstration_example(demo: Demonstration) -> dict[str, str]:
    """A demonstration as prompt variables: ``id``, ``text``, ``image_description`` and ``answer`` (the
    human answer with reasoning, else the KECPM answer sentences written from the gold quintuples)."""
    return {
        "id": demo.id,
        "text": demo.text,
        "image_description": demo.image_description,
        "answer": demo.answer if demo.answer is not None else render_answer(demo.quintuples),
    }


class DemonstrationExampleSelector(BaseExampleSelector):
    """Selects demonstrations from a store for the prompt's input variables.

    The query is ``input_variables[text_key]`` with ``input_variables[caption_key]`` as its image
    description; when ``input_variables`` holds ``id_key``, that post is excluded.

    >>> from langchain_core.prompts import FewShotPromptTemplate, PromptTemplate
    >>> block = "Text:{text}\\nImage descriptions:{image_description}\\nAnswer:{answer}"
    >>> prompt = FewShotPromptTemplate(  # doctest: +SKIP
    ...     example_selector=DemonstrationExampleSelector(store, selection=SelectionConfig(k=2)),
    ...     example_prompt=PromptTemplate.from_template(block),
    ...     suffix="Text:{text}\\nImage descriptions:{image_description}\\nAnswer:",
    ...     input_variables=["text", "image_description"],
    ... )
    >>> prompt.format(text="Mara and Theo are engaged", image_description="a couple smiling")  # doctest: +SKIP
    """

    def __init__(
        self,
        store: DemonstrationStore,
        *,
        selection: SelectionConfig | None = None,
        text_key: str = "text",
        caption_key: str = "image_description",
        id_key: str = "id",
    ) -> None:
        self.store = store
        self.selection = selection
        self.text_key = text_key
        self.caption_key = caption_key
        self.id_key = id_key

    def _query(self, input_variables: dict[str, Any]) -> dict[str, Any]:
        exclude = [input_variables[self.id_key]] if input_variables.get(self.id_key) else []
        return {
            "query": input_variables[self.text_key],
            "caption": input_variables.get(self.caption_key) or "",
            "selection": self.selection,
            "exclude_ids": exclude,
        }

    def select_examples(self, input_variables: dict[str, Any]) -> list[dict[str, Any]]:
        return [demonstration_example(d) for d in self.store.select(**self._query(input_variables))]

    async def aselect_examples(self, input_variables: dict[str, Any]) -> list[dict[str, Any]]:
        return [demonstration_example(d) for d in await self.store.aselect(**self._query(input_variables))]

    def add_example(self, example: dict[str, str]) -> str:
        """Add an example (``text``, ``image_description``, optional ``answer`` and ``id``); returns its id.

        Quintuples are read from the answer's KECPM sentences.
        """
        text, image = example[self.text_key], example.get(self.caption_key, "")
        answer = example.get("answer")
        demo = Demonstration(
            id=example.get(self.id_key) or demonstration_id("example", text, image),
            text=text,
            image_description=image,
            quintuples=tuple(parse_answer(answer).quintuples) if answer else (),
            answer=answer,
            source="example",
        )
        self.store.add([demo])
        return demo.id

    async def aadd_example(self, example: dict[str, str]) -> str:
        return await asyncio.to_thread(self.add_example, example)
