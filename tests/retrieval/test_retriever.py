"""DemonstrationRetriever: a LangChain BaseRetriever over the real Chroma store, in a retriever tool and an
agent."""

from __future__ import annotations

import pytest
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, ToolMessage

from kecpm.records import Post
from kecpm.retrieval import DemonstrationRetriever, DemonstrationStore, QueryError
from kecpm.testing import ScriptedChatModel, tool_answer


@pytest.fixture(scope="module")
def store(tmp_path_factory, embeddings) -> DemonstrationStore:
    from kecpm.records import Demonstration
    from kecpm.synthetic import synthetic_posts

    posts = synthetic_posts(12, seed=5, id_prefix="rtrain")
    store = DemonstrationStore(str(tmp_path_factory.mktemp("rstore")), embeddings, create=True)
    store.add([Demonstration.from_post(p, source="train") for p in posts])
    store.posts = posts  # type: ignore[attr-defined]
    return store


def test_documents_carry_the_demonstration_and_its_similarities(store) -> None:
    query: Post = store.posts[0]
    retriever = DemonstrationRetriever(store=store, search_kwargs={"k": 3, "caption": query.image_description})
    docs = retriever.invoke(query.text)
    assert len(docs) == 3 and all(isinstance(d, Document) for d in docs)
    assert query.id not in {d.metadata["id"] for d in docs}  # the query post itself is left out
    for doc in docs:
        demo = doc.metadata["demonstration"]
        assert doc.page_content == demo["text"] and demo["quintuples"]
        assert -1.0 <= doc.metadata["text_similarity"] <= 1.0
        assert doc.metadata["image_similarity"] is not None
    scores = [d.metadata["score"] for d in docs]
    assert scores == sorted(scores, reverse=True)


async def test_weights_k_and_exclusions_through_search_kwargs(store) -> None:
    query = store.posts[1]
    text_only = DemonstrationRetriever(store=store, search_kwargs={"k": 2, "image_weight": 0.0})
    docs = await text_only.ainvoke(query.text)
    assert len(docs) == 2
    assert all(d.metadata["score"] == pytest.approx(d.metadata["text_similarity"], abs=1e-5) for d in docs)
    first = docs[0].metadata["id"]
    skipping = DemonstrationRetriever(store=store, search_kwargs={"k": 2, "image_weight": 0.0, "exclude_ids": [first]})
    assert first not in {d.metadata["id"] for d in await skipping.ainvoke(query.text)}
    with pytest.raises(QueryError, match="unknown search_kwargs"):
        DemonstrationRetriever(store=store, search_kwargs={"top": 2}).invoke(query.text)


def test_search_kwargs_are_configurable_per_call(store) -> None:
    from langchain_core.runnables import ConfigurableField

    retriever = DemonstrationRetriever(store=store, search_kwargs={"k": 1}).configurable_fields(
        search_kwargs=ConfigurableField(id="search_kwargs")
    )
    assert len(retriever.invoke(store.posts[2].text)) == 1
    assert len(retriever.invoke(store.posts[2].text, {"configurable": {"search_kwargs": {"k": 4}}})) == 4


async def test_the_retriever_in_a_retriever_tool_and_an_agent(store) -> None:
    from langchain.agents import create_agent
    from langchain_core.tools import create_retriever_tool

    query = store.posts[3]
    retriever = DemonstrationRetriever(store=store, search_kwargs={"k": 2})
    tool = create_retriever_tool(retriever, "find_demonstrations", "Annotated posts similar to a text.")
    expected = [d.page_content for d in retriever.invoke(query.text)]
    model = ScriptedChatModel.replaying(
        tool_answer("find_demonstrations", {"query": query.text}, call_id="c1"), AIMessage(content="Found two.")
    )
    agent = create_agent(model, tools=[tool], system_prompt="Find demonstrations.")
    state = await agent.ainvoke({"messages": [("user", query.text)]}, {"recursion_limit": 8})
    (message,) = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert message.status == "success"
    assert all(text in message.content for text in expected)
    assert query.text not in message.content
