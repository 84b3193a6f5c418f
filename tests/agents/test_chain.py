"""Prompt assembly and the chain's control flow, over a scripted fake chat model (no HTTP)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kecpm.agents import (
    DEFAULT_TEMPLATES,
    Critique,
    Knowledge,
    KnowledgeCache,
    KnowledgeChain,
    checks_by_number,
    format_critique,
    format_demonstrations,
    prompt_variables,
)
from kecpm.answers import render_answer
from kecpm.labels import EntityType, Relation
from kecpm.llm import LLMCallError
from kecpm.prompts import load_template
from kecpm.records import Demonstration, Post

GENERATED = {"statements": ["Mira Holt is a singer.", "Port Avery is a town.", "Mira Holt is a singer."]}
REJECT = {
    "checks": [
        {"index": 1, "verdict": "supported", "reason": "the text says so"},
        {"index": 2, "verdict": "unsupported"},
    ],
    "missing": ["who Mira Holt works with"],
    "accept": False,
}
ACCEPT = {"checks": [{"index": 1, "verdict": "supported"}], "missing": [], "accept": True}
REVISED = {"statements": ["Mira Holt is a singer from Port Avery."]}


def _human(messages) -> str:
    return messages[-1].text


def test_generate_prompt_follows_the_paper_layout(posts: list[Post]) -> None:
    post, demo_post = posts[0], posts[1]
    demo = Demonstration.from_post(demo_post, source="train")
    variables, warnings = prompt_variables(post, [demo])
    messages = load_template(DEFAULT_TEMPLATES["generate"]).format_messages(**variables)
    system, human = messages[0][1], messages[1][1]
    assert warnings == []
    # Task instruction with the type and relation lists, in natural spelling
    assert "[person, location, organization, miscellaneous]" in system
    assert ", ".join(r.natural for r in Relation) in system
    assert "place of birth" in system and "place_of_birth" not in system
    # then the demonstrations, then the post's text and image descriptions, then the request for knowledge
    assert human.index(f"Text: {demo.text}") < human.index(f"Text: {post.text}")
    assert f"Image descriptions: {post.image_description}" in human
    assert render_answer(demo.quintuples) in human
    assert "background knowledge" in human.lower()


def test_demonstration_answers_in_the_annotators_style(posts: list[Post]) -> None:
    q = posts[0].quintuples[0]
    assert render_answer([q]) == (
        f"The relation between {q.head.name} ({q.head.type.natural}) and {q.tail.name} "
        f'({q.tail.type.natural}) is "{q.relation.natural}".'
    )
    written = Demonstration(id="d1", text="some text", answer="A written answer with reasoning.")
    assert "Answer: A written answer with reasoning." in format_demonstrations([written])
    assert format_demonstrations([]) == "(no annotated examples are available)"
    assert render_answer([]) == "There is no mentioned relation in the original text."
    assert EntityType.PER.natural in render_answer([q]) or EntityType.PER not in (q.head.type, q.tail.type)


def test_long_text_is_cut_with_a_warning() -> None:
    post = Post(id="long", text="word " * 5000)
    variables, warnings = prompt_variables(post, max_text_chars=102)
    assert variables["text"] == " ".join(["word"] * 20)  # whole words only: 99 of the 102 characters
    assert warnings == [
        "text of 24,999 characters cut to 102 for the knowledge prompts (its first 20 of 5,000 words); "
        "the extractor reads it all"
    ]
    unbroken, _ = prompt_variables(Post(id="one", text="x" * 300), max_text_chars=100)
    assert unbroken["text"] == "x" * 100  # a single word longer than the limit is cut inside it


def test_critique_is_shown_to_revise_statement_by_statement() -> None:
    text = format_critique(Knowledge(statements=["A is B.", "C is D."]), Critique.model_validate(REJECT))
    assert "1. A is B.\n   verdict: supported (the text says so)" in text
    assert "2. C is D.\n   verdict: unsupported" in text
    assert "Missing: who Mira Holt works with" in text
    # a critique that numbers the statements from 0 is read that way
    from_zero = Critique.model_validate({**REJECT, "checks": [{"index": 0, "verdict": "unsupported"}]})
    text = format_critique(Knowledge(statements=["A is B.", "C is D."]), from_zero)
    assert "1. A is B.\n   verdict: unsupported" in text and "2. C is D.\n   verdict: not judged" in text
    assert checks_by_number(from_zero)[1].verdict == "unsupported"
    assert set(checks_by_number(Critique.model_validate(REJECT))) == {1, 2}


async def test_generate_only_makes_one_call(scripted, tool_answer, posts: list[Post]) -> None:
    model = scripted(tool_answer("Knowledge", GENERATED))
    result = await KnowledgeChain(model, rounds=0).ainvoke(posts[0])
    assert len(model.seen) == 1
    assert [s.stage for s in result.steps] == ["generate"]
    # Repeated statements from a small model are kept once
    assert result.knowledge == ["Mira Holt is a singer.", "Port Avery is a town."]
    assert result.accepted is False


async def test_reflection_revises_then_stops_when_accepted(scripted, tool_answer, posts: list[Post]) -> None:
    model = scripted(
        tool_answer("Knowledge", GENERATED),
        tool_answer("Critique", REJECT),
        tool_answer("Knowledge", REVISED),
        tool_answer("Critique", ACCEPT),
    )
    result = await KnowledgeChain(model, rounds=3).ainvoke(posts[0])
    assert [(s.stage, s.round) for s in result.steps] == [
        ("generate", 0),
        ("critique", 1),
        ("revise", 1),
        ("critique", 2),
    ]
    assert len(model.seen) == 4  # round 3 never ran: the second critique accepted
    assert result.accepted is True
    assert result.knowledge == REVISED["statements"]
    # The trajectory keeps every intermediate output
    assert result.steps[0].output.statements == ["Mira Holt is a singer.", "Port Avery is a town."]
    assert result.steps[1].output.accept is False
    # critique saw the numbered knowledge; revise saw the verdicts
    assert "1. Mira Holt is a singer.\n2. Port Avery is a town." in _human(model.seen[1])
    assert "verdict: unsupported" in _human(model.seen[2])
    assert "1. Mira Holt is a singer from Port Avery." in _human(model.seen[3])
    assert result.usage.calls == 4 and result.usage.input_tokens == 400


async def test_dropping_keeps_what_the_critique_does_not_mark_unsupported(
    scripted, tool_answer, posts: list[Post]
) -> None:
    three = {"statements": ["Mira Holt is a singer.", "Port Avery is a town.", "Mira Holt lives on the moon."]}
    first = {
        "checks": [{"index": 1, "verdict": "supported"}, {"index": 3, "verdict": "unsupported"}],
        "accept": False,
    }
    second = {"checks": [{"index": 2, "verdict": "unsupported"}], "accept": False}
    model = scripted(
        tool_answer("Knowledge", three),
        tool_answer("Critique", first),
        tool_answer("Critique", second),
        tool_answer("Critique", ACCEPT),
    )
    chain = KnowledgeChain(model, rounds=3, reflection="drop_unsupported")
    result = await chain.ainvoke(posts[0])
    # No revise call: each round is one critique of what is left, renumbered
    assert [(s.stage, s.round) for s in result.steps] == [
        ("generate", 0),
        ("critique", 1),
        ("critique", 2),
        ("critique", 3),
    ]
    assert "1. Mira Holt is a singer.\n2. Port Avery is a town." in _human(model.seen[2])
    assert "moon" not in _human(model.seen[2])
    assert "1. Mira Holt is a singer." in _human(model.seen[3]) and "Port Avery" not in _human(model.seen[3])
    # statement 2, not judged in round 1, was kept then; round 2 dropped it; round 3 accepted the rest
    assert result.knowledge == ["Mira Holt is a singer."]
    assert result.accepted is True
    assert chain.fingerprint != KnowledgeChain(model, rounds=3).fingerprint


async def test_dropping_ends_when_nothing_is_dropped_or_nothing_is_left(
    scripted, tool_answer, posts: list[Post]
) -> None:
    keeps = {"checks": [{"index": 1, "verdict": "plausible"}], "accept": False}
    model = scripted(tool_answer("Knowledge", GENERATED), tool_answer("Critique", keeps))
    result = await KnowledgeChain(model, rounds=3, reflection="drop_unsupported").ainvoke(posts[0])
    assert len(model.seen) == 2  # the same statements again would get the same critique
    assert result.knowledge == ["Mira Holt is a singer.", "Port Avery is a town."]
    drops_all = {"checks": [{"index": 1, "verdict": "unsupported"}, {"index": 2, "verdict": "unsupported"}]}
    model = scripted(tool_answer("Knowledge", GENERATED), tool_answer("Critique", {**drops_all, "accept": False}))
    result = await KnowledgeChain(model, rounds=3, reflection="drop_unsupported").ainvoke(posts[0])
    assert len(model.seen) == 2
    assert result.knowledge == []
    # an accepting critique still has its unsupported statements dropped, and ends the chain
    contradicts = {"checks": [{"index": 2, "verdict": "unsupported"}], "accept": True}
    model = scripted(tool_answer("Knowledge", GENERATED), tool_answer("Critique", contradicts))
    result = await KnowledgeChain(model, rounds=3, reflection="drop_unsupported").ainvoke(posts[0])
    assert len(model.seen) == 2
    assert (result.knowledge, result.accepted) == (["Mira Holt is a singer."], True)
    with pytest.raises(ValueError, match="reflection must be one of"):
        KnowledgeChain(model, reflection="rewrite")  # type: ignore[arg-type]


async def test_a_bad_answer_is_reasked_once(scripted, tool_answer, posts: list[Post]) -> None:
    model = scripted(tool_answer("Knowledge", '{"statements": ["cut'), tool_answer("Knowledge", GENERATED))
    chain = KnowledgeChain(model, rounds=0)
    result = await chain.ainvoke(posts[0])
    assert result.knowledge[0] == "Mira Holt is a singer."
    assert len(model.seen) == 2
    assert "could not be used" in _human(model.seen[1])
    assert chain.usage["generate"].calls == 2


async def test_two_bad_answers_fail_with_the_stage_and_kind(scripted, tool_answer, posts: list[Post]) -> None:
    model = scripted(tool_answer("Knowledge", {"statements": []}))  # violates min_length=1, every time
    with pytest.raises(LLMCallError) as caught:
        await KnowledgeChain(model, rounds=1).ainvoke(posts[0])
    assert caught.value.stage == "generate"
    assert caught.value.kind == "schema"
    assert caught.value.retryable
    assert len(model.seen) == 2


async def test_cache_replays_calls_and_keys_follow_the_inputs(
    scripted, tool_answer, posts: list[Post], tmp_path: Path
) -> None:
    answers = (tool_answer("Knowledge", GENERATED), tool_answer("Critique", ACCEPT))
    with KnowledgeCache(tmp_path / "k.sqlite") as cache:
        first = scripted(*answers)
        result = await KnowledgeChain(first, rounds=1, cache=cache, model_name="m", params={"t": 0}).ainvoke(posts[0])
        again = scripted(*answers)
        replay = await KnowledgeChain(again, rounds=1, cache=cache, model_name="m", params={"t": 0}).ainvoke(posts[0])
        assert len(again.seen) == 0
        assert replay.knowledge == result.knowledge
        assert all(step.cached for step in replay.steps)
        assert [s.key for s in replay.steps] == [s.key for s in result.steps]
        # Another model, other parameters, another post: new calls
        for chain_kwargs, post in (
            ({"model_name": "other", "params": {"t": 0}}, posts[0]),
            ({"model_name": "m", "params": {"t": 1}}, posts[0]),
            ({"model_name": "m", "params": {"t": 0}}, posts[1]),
        ):
            model = scripted(*answers)
            await KnowledgeChain(model, rounds=1, cache=cache, **chain_kwargs).ainvoke(post)
            assert len(model.seen) == 2
        # Other demonstrations: a new generate call; the critique, whose prompt shows no demonstrations,
        # is the very same request as before and is answered from the cache
        model = scripted(*answers)
        demos = (Demonstration.from_post(posts[2]),)
        changed = await KnowledgeChain(model, rounds=1, cache=cache, model_name="m", params={"t": 0}).ainvoke(
            posts[0], demos
        )
        assert len(model.seen) == 1
        assert [s.cached for s in changed.steps] == [False, True]
        assert cache.count_calls() == 2 * 4 + 1


async def test_user_templates_override_the_shipped_ones(
    scripted, tool_answer, posts: list[Post], tmp_path: Path
) -> None:
    (tmp_path / "generate.v2.toml").write_text(
        'name = "generate"\nversion = 2\n[[messages]]\nrole = "human"\n'
        'content = "Facts about: {text} (examples: {demonstrations})"\n',
        encoding="utf-8",
    )
    model = scripted(tool_answer("Knowledge", GENERATED))
    chain = KnowledgeChain(model, rounds=0, templates={"generate": "generate@v2"}, template_dirs=[tmp_path])
    result = await chain.ainvoke(posts[0])
    assert _human(model.seen[0]).startswith(f"Facts about: {posts[0].text}")
    assert result.steps[0].template == "generate@v2"
    assert chain.fingerprint != KnowledgeChain(model, rounds=0).fingerprint


async def test_as_runnable_composes(scripted, tool_answer, posts: list[Post]) -> None:
    model = scripted(tool_answer("Knowledge", GENERATED))
    runnable = KnowledgeChain(model, rounds=0).as_runnable()
    result = await runnable.ainvoke({"post": posts[0], "demonstrations": []})
    assert result.post_id == posts[0].id
