"""The knowledge chain: generate -> (critique -> revise) x rounds, each stage a prompt template and a
structured-output LLM call, cached, retried, and kept in the result's trajectory. With
``reflection="drop_unsupported"`` a round keeps the statements its critique does not mark unsupported
instead of asking for a revision (one call per round, and no statement the LLM did not first write).

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
from typing import TYPE_CHECKING, Any, get_args

from pydantic import BaseModel

from ..aio import run_sync
from ..answers import render_answer
from ..hashing import content_key
from ..labels import EntityType, Relation
from ..llm import LLMCallError, classify_error, retry_policy
from ..prompts import PromptTemplateFile, load_template
from ..records import EMPTY_TEXT, Demonstration, Post
from .cache import CachedCall, KnowledgeCache
from .images import ImageError, image_part
from .schemas import Critique, Knowledge, KnowledgeResult, Reflection, Stage, StatementCheck, Step, Usage
from .spend import SpendHook, request_payload

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import BaseMessage
    from langchain_core.runnables import Runnable, RunnableConfig
    from tenacity import AsyncRetrying

    from .runnable import KnowledgeRunnable

__all__ = [
    "DEFAULT_TEMPLATES",
    "MAX_TEXT_CHARS",
    "KnowledgeChain",
    "call_key",
    "checks_by_number",
    "format_critique",
    "format_demonstrations",
    "format_knowledge",
    "prompt_variables",
]

DEFAULT_TEMPLATES: dict[Stage, str] = {"generate": "generate@v1", "critique": "critique@v1", "revise": "revise@v1"}
MAX_TEXT_CHARS = 2000
"""How much of a post's text the knowledge prompts hold, in characters, after collapsing whitespace.

A longer text is cut after its last whole word within the limit: every call stays of a known size and
cost, and the LLM writes knowledge about that first part only. The extractor still reads the whole post
(in windows: :mod:`kecpm.extractor.windows`). Each cut is a warning in the post's
``KnowledgeResult.warnings`` and in the build report (``kecpm knowledge build`` prints it). Change it
with ``KnowledgeChain(max_text_chars=...)``.
"""

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
    checks = checks_by_number(critique)
    lines = []
    for number, statement in enumerate(knowledge.statements, start=1):
        check = checks.get(number)
        verdict = f"{check.verdict}" + (f" ({check.reason})" if check.reason else "") if check else "not judged"
        lines.append(f"{number}. {statement}\n   verdict: {verdict}")
    if critique.missing:
        lines.append("Missing: " + "; ".join(critique.missing))
    return "\n".join(lines)


def checks_by_number(critique: Critique) -> dict[int, StatementCheck]:
    """The critique's checks by the number of the statement they judge (1 for the first).

    Statements are numbered from 1, so a check numbered 0 says the critique counted from 0 (SmolLM2 does,
    in 3 of 8 critiques on seed 17's val): then all its numbers are read one higher.
    """
    shift = 1 if any(check.index == 0 for check in critique.checks) else 0
    return {check.index + shift: check for check in critique.checks}


def _drop_unsupported(statements: Sequence[str], critique: Critique) -> list[str]:
    checks = checks_by_number(critique)
    return [s for n, s in enumerate(statements, start=1) if n not in checks or checks[n].verdict != "unsupported"]


def prompt_variables(
    post: Post, demonstrations: Sequence[Demonstration] = (), *, max_text_chars: int = MAX_TEXT_CHARS
) -> tuple[dict[str, str], list[str]]:
    """The variables every template may use, and warnings about the post (a text cut to ``max_text_chars``,
    see :data:`MAX_TEXT_CHARS`)."""
    warnings = []
    text = " ".join(post.text.split())
    if not text:
        raise LLMCallError(f"record {post.id!r}: {EMPTY_TEXT}", kind="input", retryable=False)
    if len(text) > max_text_chars:
        # after the last whole word (a single word longer than the limit is cut inside it)
        head = text[: max_text_chars + 1]
        kept = head.rsplit(" ", 1)[0] if " " in head else text[:max_text_chars]
        warnings.append(
            f"text of {len(text):,} characters cut to {max_text_chars:,} for the knowledge prompts "
            f"(its first {len(kept.split()):,} of {len(text.split()):,} words); the extractor reads it all"
        )
        text = kept
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
    accepts ends the chain. ``reflection="drop_unsupported"`` makes a round critique -> keep the statements
    not marked unsupported (a statement the critique does not judge is kept); the chain ends when a
    critique accepts (after its verdicts are applied), drops nothing, or leaves no statement (the post
    then has no knowledge). ``retry`` is a number of retries or a tenacity ``AsyncRetrying``;
    an answer that does not fit the schema is re-asked ``reasks`` times, then the post fails.
    ``templates`` maps a stage to a template ref (``"generate@v2"``); ``template_dirs`` are searched
    before ``$KECPM_PROMPTS_DIR`` and the shipped templates. ``model_name`` and ``params`` enter the
    cache key (pass what changes the answers; never a key). ``spend`` (a :class:`~kecpm.agents.spend.SpendGuard`)
    is asked before every request and told its usage after.
    """

    def __init__(
        self,
        model: BaseChatModel,
        *,
        rounds: int = 1,
        reflection: Reflection = "revise",
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
        max_text_chars: int = MAX_TEXT_CHARS,
        prices: tuple[float, float] = (0.0, 0.0),
        spend: SpendHook | None = None,
    ) -> None:
        if rounds < 0:
            raise ValueError("rounds must be >= 0")
        if reflection not in get_args(Reflection):
            raise ValueError(f"reflection must be one of {get_args(Reflection)}, not {reflection!r}")
        self._options: dict[str, Any] = {
            "rounds": rounds,
            "reflection": reflection,
            "cache": cache,
            "retry": retry,
            "reasks": reasks,
            "templates": dict(templates or {}),
            "template_dirs": template_dirs,
            "structured_method": structured_method,
            "model_name": model_name,
            "params": params,
            "vision": vision,
            "max_image_side": max_image_side,
            "max_text_chars": max_text_chars,
            "prices": prices,
        }
        self.model = model
        self.rounds = rounds
        self.reflection = reflection
        self.cache = cache
        self.retry = retry_policy(retry)
        self.reasks = reasks
        refs = {**DEFAULT_TEMPLATES, **(templates or {})}
        self.template_dirs = list(template_dirs or [])
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
        if spend is not None:  # the spend guard (or a dry run) sees every request before it is sent
            self._structured = {
                stage: spend.wrap(stage, runnable, request_payload(model, _SCHEMAS[stage], structured_method))
                for stage, runnable in self._structured.items()
            }
        self._prompts = {stage: template.chat_prompt() for stage, template in self.templates.items()}
        self.usage: dict[Stage, Usage] = {stage: Usage() for stage in DEFAULT_TEMPLATES}
        from langchain_core.runnables import RunnableLambda

        self._stage_runs = {stage: RunnableLambda(self._run_stage, name=stage) for stage in DEFAULT_TEMPLATES}
        self._in_flight: dict[str, asyncio.Future[CachedCall]] = {}
        self._variants: dict[str, KnowledgeChain] = {}

    def derive(
        self,
        *,
        rounds: int | None = None,
        templates: Mapping[str, str] | None = None,
        model: BaseChatModel | None = None,
        model_name: str | None = None,
    ) -> KnowledgeChain:
        """This chain with other rounds, templates (merged over its own) or model; the cache is shared.

        Variants are kept, so a per-call configuration does not reload templates on every call.
        """
        if rounds is None and not templates and model is None:
            return self
        name = model_name or (getattr(model, "model_name", None) if model is not None else None)
        label = content_key(rounds=rounds, templates=dict(templates or {}), model=id(model), name=name)
        if (found := self._variants.get(label)) is not None:
            return found
        options = dict(self._options)
        if rounds is not None:
            options["rounds"] = rounds
        if templates:
            options["templates"] = {**options["templates"], **templates}
        if model is not None:
            options["model_name"] = name
        variant = KnowledgeChain(model if model is not None else self.model, **options)
        self._variants[label] = variant
        return variant

    @functools.cached_property
    def fingerprint(self) -> str:
        """Names this chain's configuration: results of different configurations never mix in a cache.

        Computed once (a chain's configuration is fixed; :meth:`derive` makes a new chain): it hashes
        every template and schema, 0.26 ms that every post paid again (a cached rerun's profile)."""
        return content_key(
            model=self.model_name,
            params=self.params,
            rounds=self.rounds,
            # absent when "revise", so the runs built before the option keep their keys
            **({"reflection": self.reflection} if self.reflection != "revise" else {}),
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

    async def ainvoke(
        self, post: Post, demonstrations: Sequence[Demonstration] = (), config: RunnableConfig | None = None
    ) -> KnowledgeResult:
        """Build one post's knowledge; raises LLMCallError (with its stage and kind) when a stage fails for good.

        Each stage is a child run named ``generate`` / ``critique`` / ``revise`` of the current LangChain
        run (or of ``config``'s callbacks), tagged ``kecpm`` and the stage, with metadata: the template
        ref, the post id, the round, the model and whether the answer came from the cache.
        """
        variables, warnings = prompt_variables(post, demonstrations, max_text_chars=self.max_text_chars)
        image = None
        if self.vision and post.image_path is not None:
            try:
                # Pillow decodes in a worker thread: a large photo must not stall the other posts.
                image = await asyncio.to_thread(image_part, post.image_path, max_side=self.max_image_side)
            except ImageError as exc:
                warnings.append(f"{exc}; the image description is used instead")
        ctx = _StageContext(post.id, config)
        steps = []
        step = await self._stage("generate", 0, variables, image, ctx)
        steps.append(step)
        knowledge: Knowledge = step.output  # type: ignore[assignment]
        accepted = False
        for number in range(1, self.rounds + 1):
            step = await self._stage(
                "critique", number, {**variables, "knowledge": format_knowledge(knowledge)}, image, ctx
            )
            steps.append(step)
            critique: Critique = step.output  # type: ignore[assignment]
            accepted = critique.accept
            if self.reflection == "drop_unsupported":
                # The verdicts count even when the critique accepts (a small model's accept contradicts them).
                kept = _drop_unsupported(knowledge.statements, critique)
                if len(kept) == len(knowledge.statements):
                    break
                # Unvalidated: no statement left is an outcome of the chain, not an answer of the LLM.
                knowledge = Knowledge.model_construct(statements=kept)
                if accepted or not kept:
                    break
                continue
            if accepted:
                break
            step = await self._stage(
                "revise", number, {**variables, "critique": format_critique(knowledge, critique)}, image, ctx
            )
            steps.append(step)
            knowledge = step.output  # type: ignore[assignment]
        return KnowledgeResult(
            post_id=post.id, knowledge=knowledge.statements, steps=steps, accepted=accepted, warnings=warnings
        )

    def invoke(
        self, post: Post, demonstrations: Sequence[Demonstration] = (), config: RunnableConfig | None = None
    ) -> KnowledgeResult:
        """Synchronous :meth:`ainvoke`; works inside a running event loop too (a notebook, an async node).

        It runs on kecpm's private loop thread, always the same one, so the model's HTTP client meets
        one loop across calls.
        """
        return run_sync(self.ainvoke(post, demonstrations, config), persistent=True)

    def as_runnable(self) -> KnowledgeRunnable:
        """This chain as a LangChain Runnable over ``{"post": Post, "demonstrations": [...]}``, sync and async,
        with ``rounds``, ``templates`` and ``model`` as fields for ``configurable_fields`` /
        ``configurable_alternatives``."""
        from .runnable import KnowledgeRunnable

        return KnowledgeRunnable(chain=self)

    async def _stage(
        self,
        stage: Stage,
        round_: int,
        variables: Mapping[str, str],
        image: Mapping[str, Any] | None,
        ctx: _StageContext,
    ) -> Step:
        from langchain_core.runnables.config import ensure_config, merge_configs

        template = self.templates[stage]
        messages = self.messages(stage, variables, image)
        key = call_key(stage, template.ref, messages, model=self.model_name, params=self.params)
        hit = await self._claim(key) if self.cache is not None else None
        metadata = {
            "stage": stage,
            "template": template.ref,
            "post_id": ctx.post_id,
            "round": round_,
            "model": self.model_name,
            "cached": hit is not None,
        }
        call = (stage, round_, template.ref, messages, key, hit)
        config = ensure_config(ctx.config)
        if not _observed(config):
            # Nobody listens: skip the child run's callback machinery (about 1 ms of CPU per call at scale).
            return await self._run_stage(call)
        config = merge_configs(config, {"tags": ["kecpm", stage], "metadata": metadata})
        return await self._stage_runs[stage].ainvoke(call, config)

    async def _run_stage(self, call: tuple[Stage, int, str, list[BaseMessage], str, CachedCall | None]) -> Step:
        stage, round_, ref, messages, key, hit = call
        schema = _SCHEMAS[stage]
        if hit is not None:
            usage = Usage(cached=1)
            self.usage[stage] = self.usage[stage] + usage
            return Step(
                stage=stage,
                round=round_,
                template=ref,
                output=schema.model_validate(hit.output),
                usage=usage,
                cached=True,
                key=key,
            )
        if self.cache is None:
            output, usage = await self._ask(stage, messages)
            return Step(stage=stage, round=round_, template=ref, output=output, usage=usage, key=key)
        # Coroutines of this chain that need the same call wait for this one's answer.
        waiting: asyncio.Future[CachedCall] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = waiting
        # A call may outlast the lease (slow model, long retry waits): renew it while the call runs.
        renewal = asyncio.create_task(self._renew(key))
        try:
            output, usage = await self._ask(stage, messages)
            dumped = output.model_dump()
            # Queued, not awaited: the next stage starts at once; the post's result commits after it.
            self.cache.put_call_soon(key, stage=stage, template=ref, model=self.model_name, output=dumped, usage=usage)
        except BaseException as exc:
            self.cache.release_soon(key)
            if not waiting.done():
                waiting.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
                waiting.exception()  # retrieved here: no "never retrieved" warning when nobody waits
            raise
        finally:
            renewal.cancel()
            self._in_flight.pop(key, None)
        waiting.set_result(CachedCall(dumped, usage.input_tokens, usage.output_tokens))
        return Step(stage=stage, round=round_, template=ref, output=output, usage=usage, key=key)

    async def _claim(self, key: str) -> CachedCall | None:
        """The stored answer of a call, or None once this chain holds the lease to make it.

        While another builder (a coroutine here, or another process on the same cache) makes the same
        call, wait for its answer rather than pay for the call twice.
        """
        assert self.cache is not None
        while True:
            if (waiting := self._in_flight.get(key)) is not None:
                try:
                    return await asyncio.shield(waiting)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    continue  # its call failed: try it ourselves
            found = await self.cache.alookup(key)
            if isinstance(found, CachedCall):
                return found
            if found == "mine" and key not in self._in_flight:
                return None
            await asyncio.sleep(self.claim_poll_s)

    async def _renew(self, key: str) -> None:
        assert self.cache is not None
        while True:
            await asyncio.sleep(self.cache.lease_s / 3)
            await self.cache.arenew(key)

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


def _observed(config: RunnableConfig) -> bool:
    """Whether any callback handler or LangSmith tracing would see a child run."""
    from langchain_core.tracers.context import _tracing_v2_is_enabled

    callbacks = config.get("callbacks")
    handlers = getattr(callbacks, "handlers", callbacks)
    return bool(handlers) or bool(_tracing_v2_is_enabled())


class _StageContext:
    """What every stage run of one post shares: the post id and the caller's config."""

    __slots__ = ("config", "post_id")

    def __init__(self, post_id: str, config: RunnableConfig | None) -> None:
        self.post_id = post_id
        self.config = config
