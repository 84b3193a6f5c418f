"""The knowledge chain: generate -> (critique -> revise) x rounds, each stage a prompt template and a
structured-output LLM call, cached, retried, and kept in the result's trajectory.

>>> chain = KnowledgeChain(chat_model, rounds=1, cache=KnowledgeCache("out/k.sqlite"))  # doctest: +SKIP
>>> result = await chain.ainvoke(post, demonstrations)  # doctest: +SKIP
>>> result.knowledge, [step.stage for step in result.steps]  # doctest: +SKIP
(['...'], ['generate', 'critique', 'revise'])
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ..answers import render_answer
from ..hashing import content_key
from ..labels import EntityType, Relation
from ..llm import LLMCallError, classify_error, retry_policy
from ..prompts import PromptTemplateFile, load_template
from ..records import Demonstration, Post
from .cache import CachedCall, KnowledgeCache
from .images import ImageError, image_part
from .schemas import Critique, Knowledge, KnowledgeResult, Stage, Step, Usage

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import BaseMessage
    from langchain_core.runnables import Runnable
    from tenacity import AsyncRetrying

__all__ = [
    "DEFAULT_TEMPLATES",
    "KnowledgeChain",
    "call_key",
    "format_critique",
    "format_demonstrations",
    "format_knowledge",
    "prompt_variables",
]

DEFAULT_TEMPLATES: dict[Stage, str] = {"generate": "generate@v1", "critique": "critique@v1", "revise": "revise@v1"}
_SCHEMAS: dict[Stage, type[BaseModel]] = {"generate": Knowledge, "critique": Critique, "revise": Knowledge}


def call_key(
    stage: Stage, template: str, messages: Sequence[BaseMessage], *, model: str, params: Mapping[str, Any]
) -> str:
    """The cache key of one call: a hash of what determines its answer (the stage and its output schema,
    the template's ref, the rendered messages, the model and its parameters; never a key or URL)."""
    return content_key(
        stage=stage,
        template=template,
        messages=[(m.type, m.content) for m in messages],
        schema=_schema_json(stage),
        model=model,
        params=dict(params),
    )


@functools.cache
def _schema_json(stage: Stage) -> dict[str, Any]:
    # Built once: pydantic derives a JSON schema anew on every call, a cost paid per LLM call at scale.
    return _SCHEMAS[stage].model_json_schema()


def format_demonstrations(demonstrations: Sequence[Demonstration]) -> str:
    """Text, image description and answer of each demonstration, separated by blank lines."""
    if not demonstrations:
        return "(no annotated examples are available)"
    blocks = []
    for demo in demonstrations:
        answer = demo.answer or render_answer(demo.quintuples)
        blocks.append(f"Text: {demo.text}\nImage descriptions: {demo.image_description or '(none)'}\nAnswer: {answer}")
    return "\n\n".join(blocks)


def format_knowledge(knowledge: Knowledge) -> str:
    return "\n".join(f"{number}. {statement}" for number, statement in enumerate(knowledge.statements, start=1))


def format_critique(knowledge: Knowledge, critique: Critique) -> str:
    """Each statement with its verdict and reason, then what is missing."""
    checks = {check.index: check for check in critique.checks}
    lines = []
    for number, statement in enumerate(knowledge.statements, start=1):
        check = checks.get(number)
        verdict = f"{check.verdict}" + (f" ({check.reason})" if check.reason else "") if check else "not judged"
        lines.append(f"{number}. {statement}\n   verdict: {verdict}")
    if critique.missing:
        lines.append("Missing: " + "; ".join(critique.missing))
    return "\n".join(lines)


def prompt_variables(
    post: Post, demonstrations: Sequence[Demonstration] = (), *, max_text_chars: int = 2000
) -> tuple[dict[str, str], list[str]]:
    """The variables every template may use, and warnings about the post (a text cut to ``max_text_chars``)."""
    warnings = []
    text = " ".join(post.text.split())
    if not text:
        raise LLMCallError(f"post {post.id!r} has no text", kind="input", retryable=False)
    if len(text) > max_text_chars:
        warnings.append(f"text of {len(text):,} characters cut to {max_text_chars:,}")
        text = text[:max_text_chars]
    variables = {
        "types": ", ".join(t.natural for t in EntityType),
        "relations": ", ".join(r.natural for r in Relation),
        "demonstrations": format_demonstrations(demonstrations),
        "text": text,
        "image_description": post.image_description or "(none)",
    }
    return variables, warnings


def _describe_bad_answer(answer: Mapping[str, Any]) -> tuple[str, str]:
    """``(problem, kind)`` for an answer that yielded no parsed output."""
    raw, error = answer.get("raw"), answer.get("parsing_error")
    kwargs = getattr(raw, "additional_kwargs", {}) or {}
    if kwargs.get("refusal") or type(error).__name__ == "ModelRefusalError":
        return f"the model refused: {kwargs.get('refusal') or error}", "refusal"
    if error is not None:
        return f"the answer does not fit the schema: {str(error)[:300]}", "schema"
    if getattr(raw, "invalid_tool_calls", None):
        return "the function arguments are not valid JSON", "schema"
    if not getattr(raw, "content", None):
        return "the answer is empty", "schema"
    return "the answer calls no function", "schema"


def _structured(model: BaseChatModel, schema: type[BaseModel], method: str) -> Runnable:
    """A runnable answering ``{"raw", "parsed", "parsing_error"}`` for ``schema`` (see
    :func:`kecpm.llm.structured.structured_runnable`: LangChain's own wrapper costs about as much client
    CPU per call as the HTTP call itself)."""
    from ..llm.structured import structured_runnable

    return structured_runnable(model, schema, method)


class KnowledgeChain:
    """generate -> critique -> revise over any LangChain chat model with tool calling.

    ``rounds`` is the number of critique/revise rounds (0: generate only); a round whose critique
    accepts ends the chain. ``retry`` is a number of retries or a tenacity ``AsyncRetrying``;
    an answer that does not fit the schema is re-asked ``reasks`` times, then the post fails.
    ``templates`` maps a stage to a template ref (``"generate@v2"``); ``template_dirs`` are searched
    before ``$KECPM_PROMPTS_DIR`` and the shipped templates. ``model_name`` and ``params`` enter the
    cache key (pass what changes the answers; never a key).
    """

    def __init__(
        self,
        model: BaseChatModel,
        *,
        rounds: int = 1,
        cache: KnowledgeCache | None = None,
        retry: int | AsyncRetrying = 4,
        reasks: int = 1,
        templates: Mapping[str, str] | None = None,
        template_dirs: Sequence[str | Path] | None = None,
        structured_method: str = "function_calling",
        model_name: str | None = None,
        params: Mapping[str, Any] | None = None,
        vision: bool = False,
        max_image_side: int = 1024,
        max_text_chars: int = 2000,
        prices: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        if rounds < 0:
            raise ValueError("rounds must be >= 0")
        self.model = model
        self.rounds = rounds
        self.cache = cache
        self.retry = retry_policy(retry)
        self.reasks = reasks
        refs = {**DEFAULT_TEMPLATES, **(templates or {})}
        self.templates: dict[Stage, PromptTemplateFile] = {
            stage: load_template(refs[stage], search_dirs=template_dirs) for stage in DEFAULT_TEMPLATES
        }
        self.model_name = model_name or getattr(model, "model_name", None) or type(model).__name__
        self.params = dict(params or {})
        self.vision = vision
        self.max_image_side = max_image_side
        self.max_text_chars = max_text_chars
        self.prices = prices
        self.claim_poll_s = 0.05
        self._structured = {stage: _structured(model, schema, structured_method) for stage, schema in _SCHEMAS.items()}
        self._prompts = {stage: template.chat_prompt() for stage, template in self.templates.items()}
        self.usage: dict[Stage, Usage] = {stage: Usage() for stage in DEFAULT_TEMPLATES}

    @property
    def fingerprint(self) -> str:
        """Names this chain's configuration: results of different configurations never mix in a cache."""
        return content_key(
            model=self.model_name,
            params=self.params,
            rounds=self.rounds,
            templates={stage: [t.ref, [m.model_dump() for m in t.messages]] for stage, t in self.templates.items()},
            schemas={stage: _schema_json(stage) for stage in _SCHEMAS},
        )[:16]

    def messages(
        self, stage: Stage, variables: Mapping[str, str], image: Mapping[str, Any] | None = None
    ) -> list[BaseMessage]:
        """The messages of ``stage``; an image content part, when given, joins the last (human) message."""
        from langchain_core.messages import HumanMessage

        messages = self._prompts[stage].format_messages(**variables)
        if image is not None:
            messages[-1] = HumanMessage(content=[{"type": "text", "text": messages[-1].text}, dict(image)])
        return messages

    async def ainvoke(self, post: Post, demonstrations: Sequence[Demonstration] = ()) -> KnowledgeResult:
        """Build one post's knowledge; raises LLMCallError (with its stage and kind) when a stage fails for good."""
        variables, warnings = prompt_variables(post, demonstrations, max_text_chars=self.max_text_chars)
        image = None
        if self.vision and post.image_path is not None:
            try:
                image = image_part(post.image_path, max_side=self.max_image_side)
            except ImageError as exc:
                warnings.append(f"{exc}; the image description is used instead")
        steps = []
        step = await self._stage("generate", 0, variables, image)
        steps.append(step)
        knowledge: Knowledge = step.output  # type: ignore[assignment]
        accepted = False
        for number in range(1, self.rounds + 1):
            step = await self._stage("critique", number, {**variables, "knowledge": format_knowledge(knowledge)}, image)
            steps.append(step)
            critique: Critique = step.output  # type: ignore[assignment]
            if critique.accept:
                accepted = True
                break
            step = await self._stage(
                "revise", number, {**variables, "critique": format_critique(knowledge, critique)}, image
            )
            steps.append(step)
            knowledge = step.output  # type: ignore[assignment]
        return KnowledgeResult(
            post_id=post.id, knowledge=knowledge.statements, steps=steps, accepted=accepted, warnings=warnings
        )

    def invoke(self, post: Post, demonstrations: Sequence[Demonstration] = ()) -> KnowledgeResult:
        """Synchronous :meth:`ainvoke` (not from inside a running event loop)."""
        return asyncio.run(self.ainvoke(post, demonstrations))

    def as_runnable(self) -> Runnable:
        """This chain as a LangChain Runnable over ``{"post": Post, "demonstrations": [...]}``."""
        from langchain_core.runnables import RunnableLambda

        async def run(inputs: Mapping[str, Any]) -> KnowledgeResult:
            return await self.ainvoke(inputs["post"], inputs.get("demonstrations", ()))

        return RunnableLambda(run, name="knowledge_chain")

    async def _stage(
        self, stage: Stage, round_: int, variables: Mapping[str, str], image: Mapping[str, Any] | None
    ) -> Step:
        template = self.templates[stage]
        messages = self.messages(stage, variables, image)
        key = call_key(stage, template.ref, messages, model=self.model_name, params=self.params)
        schema = _SCHEMAS[stage]
        if self.cache is not None and (hit := await self._claim(key)) is not None:
            usage = Usage(cached=1)
            self.usage[stage] = self.usage[stage] + usage
            return Step(
                stage=stage,
                round=round_,
                template=template.ref,
                output=schema.model_validate(hit.output),
                usage=usage,
                cached=True,
                key=key,
            )
        # A call may outlast the lease (slow model, long retry waits): renew it while the call runs.
        renewal = asyncio.create_task(self._renew(key)) if self.cache is not None else None
        try:
            output, usage = await self._ask(stage, messages)
        except BaseException:
            if self.cache is not None:
                self.cache.release(key)
            raise
        finally:
            if renewal is not None:
                renewal.cancel()
        if self.cache is not None:
            self.cache.put_call(
                key, stage=stage, template=template.ref, model=self.model_name, output=output.model_dump(), usage=usage
            )
        return Step(stage=stage, round=round_, template=template.ref, output=output, usage=usage, key=key)

    async def _claim(self, key: str) -> CachedCall | None:
        """The stored answer of a call, or None once this chain holds the lease to make it.

        While another builder (a coroutine here, or another process on the same cache) makes the same
        call, wait for its answer rather than pay for the call twice.
        """
        assert self.cache is not None
        while True:
            if (hit := self.cache.get_call(key)) is not None:
                return hit
            if self.cache.claim(key) == "mine":
                return None
            await asyncio.sleep(self.claim_poll_s)

    async def _renew(self, key: str) -> None:
        assert self.cache is not None
        while True:
            await asyncio.sleep(self.cache.lease_s / 3)
            self.cache.renew(key)

    async def _ask(self, stage: Stage, messages: list[BaseMessage]) -> tuple[BaseModel, Usage]:
        """One structured answer: transport faults retried by the policy, bad answers re-asked."""
        from langchain_core.messages import HumanMessage

        runnable = self._structured[stage]
        schema = _SCHEMAS[stage]
        usage = Usage()
        conversation = list(messages)
        problem, kind = "", "schema"
        try:
            for _ in range(self.reasks + 1):
                answer = await self._call_with_retries(runnable, conversation, stage, usage)
                raw = answer.get("raw")
                meta = getattr(raw, "usage_metadata", None) or {}
                spent = Usage(
                    calls=1,
                    input_tokens=int(meta.get("input_tokens", 0)),
                    output_tokens=int(meta.get("output_tokens", 0)),
                )
                spent.cost = (spent.input_tokens * self.prices[0] + spent.output_tokens * self.prices[1]) / 1e6
                usage = usage + spent
                if answer.get("parsed") is not None and answer.get("parsing_error") is None:
                    return answer["parsed"], usage
                problem, kind = _describe_bad_answer(answer)
                # A fresh human turn, not the bad tool call: providers reject a tool call left unanswered.
                conversation = [
                    *messages,
                    HumanMessage(
                        f"Your previous answer could not be used: {problem}. "
                        f"Answer again by calling {schema.__name__} with arguments that fit its schema."
                    ),
                ]
        finally:
            self.usage[stage] = self.usage[stage] + usage
        raise LLMCallError(
            f"{stage}: {problem} (after {self.reasks} re-ask{'s' if self.reasks != 1 else ''})",
            kind=kind,
            stage=stage,
        )

    async def _call_with_retries(
        self, runnable: Runnable, conversation: list[BaseMessage], stage: Stage, usage: Usage
    ) -> Mapping[str, Any]:
        from tenacity import RetryError

        attempts = 0
        try:
            async for attempt in self.retry.copy():
                with attempt:
                    attempts += 1
                    return await runnable.ainvoke(conversation)
        except RetryError as exc:
            cause = exc.last_attempt.exception() or exc
            kind, retryable = classify_error(cause)
            raise LLMCallError(
                f"{stage}: {type(cause).__name__}: {cause}", kind=kind, retryable=retryable, stage=stage
            ) from cause
        except Exception as exc:
            kind, retryable = classify_error(exc)
            raise LLMCallError(
                f"{stage}: {type(exc).__name__}: {exc}", kind=kind, retryable=retryable, stage=stage
            ) from exc
        finally:
            usage.retries += max(0, attempts - 1)
        raise AssertionError("unreachable: the retry policy neither returned nor raised")
