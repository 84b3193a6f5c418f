"""The LangChain example-selector adapter, inside a real FewShotPromptTemplate."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.prompts import FewShotPromptTemplate, PromptTemplate

from kecpm.records import Demonstration, Entity, Quintuple
from kecpm.retrieval import (
    DemonstrationExampleSelector,
    DemonstrationStore,
    MiniLMEmbeddings,
    SelectionConfig,
    demonstration_example,
)

BLOCK = "Text:{text}\nImage descriptions:{image_description}\nAnswer:{answer}"
HUMAN = Demonstration(
    id="human-1",
    text="Mara and Theo are engaged",
    image_description="a man and a woman smiling",
    quintuples=(
        Quintuple(head=Entity(name="Mara", type="per"), tail=Entity(name="Theo", type="per"), relation="couple"),
    ),
    answer='The relation between Mara (person) and Theo (person) is "couple". Reasoning: engaged.',
)
GOLD_ONLY = Demonstration(
    id="gold-1",
    text="Ivo Petrak joins Northgate FC from Riverside",
    image_description="a footballer in a red shirt",
    quintuples=(
        Quintuple(
            head=Entity(name="Ivo Petrak", type="per"),
            tail=Entity(name="Northgate FC", type="org"),
            relation="member_of",
        ),
    ),
)
SOUP = Demonstration(id="soup", text="A quick tomato soup recipe", image_description="a bowl of soup")


@pytest.fixture
def store(tmp_path: Path, embeddings: MiniLMEmbeddings) -> DemonstrationStore:
    built = DemonstrationStore(tmp_path / "s", embeddings, create=True)
    built.add([HUMAN, GOLD_ONLY, SOUP])
    return built


def few_shot(selector: DemonstrationExampleSelector) -> FewShotPromptTemplate:
    return FewShotPromptTemplate(
        example_selector=selector,
        example_prompt=PromptTemplate.from_template(BLOCK),
        prefix="Extract entities and relations.",
        suffix="Text:{text}\nImage descriptions:{image_description}\nAnswer:",
        input_variables=["text", "image_description"],
    )


def test_examples_carry_the_human_answer_or_one_written_from_the_gold() -> None:
    assert demonstration_example(HUMAN)["answer"] == HUMAN.answer
    assert demonstration_example(GOLD_ONLY)["answer"] == (
        'The relation between Ivo Petrak (person) and Northgate FC (organization) is "member of".'
    )


async def test_the_selector_fills_a_few_shot_prompt(store: DemonstrationStore) -> None:
    prompt = few_shot(DemonstrationExampleSelector(store, selection=SelectionConfig(k=1)))
    variables = {"text": "Mara Quist and Theo Brandt got engaged", "image_description": "a smiling couple"}
    text = prompt.format(**variables)
    assert text.startswith("Extract entities and relations.")
    assert f"Text:{HUMAN.text}\nImage descriptions:{HUMAN.image_description}\nAnswer:{HUMAN.answer}" in text
    assert text.endswith("Text:Mara Quist and Theo Brandt got engaged\nImage descriptions:a smiling couple\nAnswer:")
    assert SOUP.text not in text
    assert await prompt.aformat(**variables) == text


async def test_the_selector_excludes_the_query_post_and_adds_examples(store: DemonstrationStore) -> None:
    selector = DemonstrationExampleSelector(store, selection=SelectionConfig(k=1))
    query = {"id": "human-1", "text": HUMAN.text, "image_description": HUMAN.image_description}
    assert [e["id"] for e in selector.select_examples(query)] != ["human-1"]
    new_id = selector.add_example(
        {
            "text": "Tom and Jerry are neighbors",
            "image_description": "a cat and a mouse",
            "answer": 'The relation between Tom (person) and Jerry (person) is "neighbor".',
        }
    )
    added = store.get([new_id])[0]
    assert added.quintuples[0].relation.value == "neighbor"
    found = await selector.aselect_examples({"text": "Tom and Jerry live next door", "image_description": "a cat"})
    assert found[0]["id"] == new_id
    assert await selector.aadd_example({"id": "x-1", "text": "More", "image_description": "a picture"}) == "x-1"
    assert store.count() == 5
