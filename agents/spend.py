"""The spend guard: what a knowledge build would cost before it runs, and a budget it never crosses.

- **Estimate** (a dry run): the chain walks each post through the cache exactly as a build would, and the
  first call the cache cannot answer is *rendered, not sent*: its request body (messages + function
  schema, as ``ChatOpenAI`` would post it) is counted by a :class:`TokenCounter`. Calls after it depend
  on answers not yet known: they are counted as an upper bound (every critique rejects; each earlier
  answer as long as ``max_tokens``) and, when the cache holds answers of the same model, as an expected
  figure (measured accept rate and mean answer lengths).
- **Budget** (:class:`SpendGuard`): before each request the guard *reserves* its worst case (the counted
  input, raised by the counter's stated error, plus ``max_tokens`` of output) and refuses the request
  when spent + reserved + this one would cross the limit; after it, the reservation is *settled* with the
  usage the server reported. Reservations held by requests in flight count, so the bound holds at any
  concurrency: a request that does not fit waits for those in flight to settle, and is refused when it
  does not fit with none in flight. That refusal closes the guard: no request starts after it, the
  requests in flight finish and are cached, and a rerun with a higher limit resumes from the cache.

>>> guard = SpendGuard(SpendLimit(cost=0.50), prices=(0.15, 0.60), max_output_tokens=320)  # doctest: +SKIP
>>> async with KnowledgeBuilder(config, cache="out/k.sqlite", spend=guard) as builder:  # doctest: +SKIP
...     report = await builder.abuild(posts)  # report.left: posts the budget did not reach
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, Field

from ..errors import KecpmError
from ..hashing import content_key
from ..llm import LLMCallError
from .schemas import STAGES, SpendLimit, SpendReport, Stage

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import BaseMessage
    from langchain_core.runnables import Runnable

    from ..llm import LLMConfig
    from .cache import KnowledgeCache

__all__ = [
    "APPROXIMATE_ERROR",
    "ApproximateTokenCounter",
    "BudgetExhausted",
    "BudgetStopped",
    "CacheHistory",
    "LlamaTokenCounter",
    "SpendEstimate",
    "SpendEstimator",
    "SpendGuard",
    "SpendHook",
    "SpendLimit",
    "SpendReport",
    "StageEstimate",
    "TokenCounter",
    "counter_for",
    "request_payload",
]

APPROXIMATE_ERROR = 0.25
"""The stated error of :class:`ApproximateTokenCounter` (see its docs and the README's measurement); the
guard raises its reservations by this much, so an undercount does not let a build cross its budget."""


class BudgetExhausted(LLMCallError):
    """A request refused by the spend guard: it could cross the budget (nothing was sent)."""

    def __init__(self, message: str, *, stage: str | None = None) -> None:
        super().__init__(message, kind="budget", retryable=False, stage=stage)


class BudgetStopped(KecpmError):
    """A run that the budget stopped before it crossed it: ``done`` posts built, ``left`` not reached,
    ``spend`` what was spent. Everything finished is cached: a rerun with a higher budget resumes."""

    def __init__(self, spend: SpendReport, *, done: int, left: int, what: str = "knowledge") -> None:
        self.spend, self.done, self.left = spend, done, left
        super().__init__(
            f"the budget ({spend.limit.describe()}) stopped the {what} stage before crossing it: {done} posts done, "
            f"{left} left; spent {spend.cost:.6g} ({spend.tokens:,} tokens in {spend.calls} calls). Every finished "
            "call is cached: rerun with a higher budget to resume"
        )


class _DryRunStop(LLMCallError):
    """Raised in place of the first request a dry run reaches (nothing is sent)."""

    def __init__(self, stage: str) -> None:
        super().__init__(f"{stage}: dry run", kind="dry_run", retryable=False, stage=stage)


class SpendHook(Protocol):
    """What a chain asks about spending: wrap the structured-answer call of ``stage`` (whose request body
    ``payload(messages)`` renders) so that every request passes the hook first."""

    def wrap(self, stage: Stage, runnable: Runnable, payload: Callable[[list], dict[str, Any]]) -> Runnable: ...


# -- token counting -------------------------------------------------------------------------------------


class TokenCounter(Protocol):
    """Counts the input tokens of one chat-completions request body (``messages``, ``tools``, ...)."""

    name: str
    error: float  # the stated relative error (0.0: exact for the server it names)

    def count(self, payload: Mapping[str, Any]) -> int: ...


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


class ApproximateTokenCounter:
    """For endpoints whose tokenizer is not on this machine: about 4 characters per token.

    ``ceil(chars / 4)`` of each message's text plus 4 tokens of framing per message, plus
    ``ceil(chars / 4)`` of the JSON of the function schemas, plus 3 for the reply's priming. Its error
    against two real tokenizers on kecpm's own prompts is in the README (*Before a paid run*); it is
    stated as :data:`APPROXIMATE_ERROR`, and images are not counted.
    """

    name = "approximate (4 characters per token)"
    error = APPROXIMATE_ERROR

    def count(self, payload: Mapping[str, Any]) -> int:
        total = 3
        for message in payload.get("messages", []):
            total += 4 + math.ceil(len(_content_text(message.get("content"))) / 4)
        if payload.get("tools"):
            total += math.ceil(len(json.dumps(payload["tools"], ensure_ascii=False)) / 4)
        return total


class _Captured(Exception):
    def __init__(self, tokens: list[int]) -> None:
        self.tokens = tokens


class _PromptCapture:
    """Stands in for ``Llama`` inside llama-cpp-python's chat handler: it tokenizes with the real
    vocabulary and, where the handler would start generating, hands back the prompt's tokens."""

    verbose = False

    def __init__(self, llama: Any) -> None:
        self._llama = llama

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        return self._llama.tokenize(text, add_bos=add_bos, special=special)

    def create_completion(self, prompt: list[int], **_: Any) -> Any:
        raise _Captured(prompt)


class LlamaTokenCounter:
    """Exact for a llama-cpp-python server of a GGUF model (the embedded SmolLM2 by default): the GGUF's
    vocabulary loaded alone (``Llama(path, vocab_only=True)``, no weights, about 0.1 s) and the server's
    own chat handler, so the chat template, the function schema and the special tokens are applied exactly
    as the server applies them before it reports ``prompt_tokens``."""

    error = 0.0

    def __init__(self, model_path: str | Path | None = None) -> None:
        from ..llm import smollm2_path

        self.model_path = Path(model_path) if model_path else smollm2_path()
        self.name = f"exact ({self.model_path.name} vocabulary and chat template)"
        self._lock = threading.Lock()
        self._handler: Any = None
        self._llama: Any = None

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._handler is None:
                from llama_cpp import Llama, llama_chat_format
                from llama_cpp._utils import suppress_stdout_stderr

                with suppress_stdout_stderr(disable=False):  # llama.cpp logs from C even when not verbose
                    llama = Llama(str(self.model_path), vocab_only=True, verbose=False)
                # How Llama.create_chat_completion picks its handler.
                self._handler = (
                    llama.chat_handler
                    or llama._chat_handlers.get(llama.chat_format)
                    or llama_chat_format.get_chat_completion_handler(llama.chat_format)
                )
                self._llama = llama
        return self._handler, self._llama

    def count(self, payload: Mapping[str, Any]) -> int:
        handler, llama = self._load()
        messages = [{**m, "content": _content_text(m.get("content"))} for m in payload.get("messages", [])]
        try:
            handler(
                llama=_PromptCapture(llama),
                messages=messages,
                tools=payload.get("tools"),
                tool_choice=payload.get("tool_choice"),
                response_format=payload.get("response_format"),
            )
        except _Captured as captured:
            return len(captured.tokens)
        raise RuntimeError("llama-cpp-python's chat handler did not reach generation")


def counter_for(llm: LLMConfig | None) -> TokenCounter:
    """The exact counter for the embedded SmolLM2 (served here, or by an :class:`~kecpm.llm.EmbeddedServer`
    at a URL) when llama-cpp-python is installed, else the approximation."""
    import importlib.util

    from ..llm import EMBEDDED_MODEL

    embedded = llm is not None and (llm.embedded or llm.model == EMBEDDED_MODEL)
    if embedded and importlib.util.find_spec("llama_cpp") is not None:
        return LlamaTokenCounter()
    return ApproximateTokenCounter()


def request_payload(model: BaseChatModel, schema: type[BaseModel], method: str) -> Callable[[list], dict[str, Any]]:
    """A function of the messages -> the request body that ``model`` would post for a structured answer in
    ``schema`` (``ChatOpenAI``'s own payload builder; for other chat models, the OpenAI form of the
    messages and of the function)."""
    from langchain_core.messages import convert_to_openai_messages
    from langchain_core.utils.function_calling import convert_to_openai_tool

    tool = convert_to_openai_tool(schema)
    kwargs: dict[str, Any] = {}
    if method == "function_calling":
        kwargs = {"tools": [tool], "tool_choice": {"type": "function", "function": {"name": schema.__name__}}}
    else:
        kwargs = {"response_format": {"type": "json_schema", "json_schema": tool["function"]}}
    build = getattr(model, "_get_request_payload", None)

    def payload(messages: list[BaseMessage]) -> dict[str, Any]:
        if build is not None:
            try:
                return dict(build(messages, **kwargs))
            except Exception:  # a chat model whose payload builder wants other arguments
                pass
        return {"messages": convert_to_openai_messages(messages), **kwargs}

    return payload


# -- the budget -----------------------------------------------------------------------------------------


class _Reservation:
    __slots__ = ("cost", "counted", "input_tokens", "output_tokens", "tokens")

    def __init__(self, input_tokens: int, output_tokens: int, cost: float, counted: int = 0) -> None:
        self.counted = counted
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.tokens = input_tokens + output_tokens
        self.cost = cost


def _answer_cap(payload: Mapping[str, Any]) -> int | None:
    """The cap on the answer that the request itself carries, however the client spells it."""
    extra = payload.get("extra_body") or {}
    for value in (payload.get("max_completion_tokens"), payload.get("max_tokens"), extra.get("max_tokens")):
        if value:
            return int(value)
    return None


class SpendGuard:
    """Holds a run under ``limit``: reserve before each request, settle after (see the module docs).

    ``prices`` are per million input and output tokens; ``max_output_tokens`` is the cap sent with every
    request; ``counter`` counts a request's input tokens (the approximation by default). One guard may be
    shared by several builders (the runs of an experiment): the bound is over all of them.
    """

    def __init__(
        self,
        limit: SpendLimit,
        *,
        prices: tuple[float, float] = (0.0, 0.0),
        max_output_tokens: int,
        counter: TokenCounter | None = None,
    ) -> None:
        if limit.cost is not None and not any(prices):
            raise ValueError("a money budget needs prices (--input-price/--output-price per million tokens)")
        self.limit = limit
        self.prices = prices
        self.max_output_tokens = max_output_tokens
        self.counter = counter or ApproximateTokenCounter()
        self.report = SpendReport(limit=limit)
        self._reserved_tokens = 0
        self._reserved_cost = 0.0
        self._in_flight = 0
        self._scale = 1.0  # raised when a server reports more input tokens than were reserved
        self._waiters: list[asyncio.Future[None]] = []

    @classmethod
    def for_llm(cls, limit: SpendLimit, llm: LLMConfig) -> SpendGuard:
        """A guard with ``llm``'s prices and answer cap, counting tokens exactly for the embedded server."""
        return cls(
            limit,
            prices=(llm.input_price, llm.output_price),
            max_output_tokens=llm.max_tokens,
            counter=counter_for(llm),
        )

    def cost(self, input_tokens: float, output_tokens: float) -> float:
        return _cost(self.prices, input_tokens, output_tokens)

    def _problem(self, worst: _Reservation, stage: str | None) -> str:
        """Why ``worst`` does not fit beside what is spent and in flight ('' when it does)."""
        report = self.report
        if self.limit.tokens is not None and report.tokens + self._reserved_tokens + worst.tokens > self.limit.tokens:
            return (
                f"{report.tokens:,} tokens used, {self._reserved_tokens:,} reserved in flight, and this {stage or ''} "
                f"request may take {worst.tokens:,} of the {self.limit.tokens:,}"
            )
        if self.limit.cost is not None and report.cost + self._reserved_cost + worst.cost > self.limit.cost:
            return (
                f"{report.cost:.6g} spent, {self._reserved_cost:.6g} reserved in flight, and this {stage or ''} "
                f"request may cost {worst.cost:.6g} of the {self.limit.cost:g}"
            )
        return ""

    async def reserve(self, payload: Mapping[str, Any], stage: str | None = None) -> _Reservation:
        """Reserve the worst case of one request, or raise :class:`BudgetExhausted` (and close the guard).

        A request that does not fit while others are in flight waits for them to settle (they usually
        use less than they reserved); it is refused only when it does not fit with nothing in flight.
        """
        counted = self.counter.count(payload)
        input_tokens = math.ceil(counted * max(1 + self.counter.error, self._scale))
        cap = _answer_cap(payload) or self.max_output_tokens
        worst = _Reservation(input_tokens, cap, self.cost(input_tokens, cap), counted)
        report = self.report
        while True:
            if report.stopped:
                raise BudgetExhausted(f"the budget ({self.limit.describe()}) is spent: {report.refused}", stage=stage)
            problem = self._problem(worst, stage)
            if not problem:
                break
            if self._in_flight == 0:
                report.stopped, report.refused = True, " ".join(problem.split())
                self._wake()
                raise BudgetExhausted(f"stopped before crossing the budget: {report.refused}", stage=stage)
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        self._in_flight += 1
        self._reserved_tokens += worst.tokens
        self._reserved_cost += worst.cost
        return worst

    def _release(self, reservation: _Reservation) -> None:
        self._in_flight -= 1
        self._reserved_tokens -= reservation.tokens
        self._reserved_cost -= reservation.cost
        if self._in_flight == 0:  # no float drift left over
            self._reserved_tokens, self._reserved_cost = 0, 0.0
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def settle(self, reservation: _Reservation, input_tokens: int, output_tokens: int) -> None:
        """Replace a reservation with what the request used (the server's usage figures). A server that
        counts more input than reserved raises every later reservation by the ratio it showed."""
        if input_tokens > reservation.input_tokens and reservation.counted:
            self._scale = max(self._scale, input_tokens / reservation.counted)
        self.report.calls += 1
        self.report.input_tokens += input_tokens
        self.report.output_tokens += output_tokens
        self.report.cost += self.cost(input_tokens, output_tokens)
        self._release(reservation)

    def settle_failed(self, reservation: _Reservation, error: BaseException) -> None:
        """A request that got no answer: an error status is not billed; a timeout or a dropped connection
        may have been, so it is settled at its reserved worst case."""
        import openai

        if isinstance(error, openai.APIStatusError):
            self._release(reservation)
            return
        self.settle(reservation, reservation.input_tokens, reservation.output_tokens)

    def wrap(self, stage: Stage, runnable: Runnable, payload: Callable[[list], dict[str, Any]]) -> Runnable:
        """``runnable`` (a structured-answer call of the chain) with a reservation around every request."""
        from langchain_core.runnables import RunnableLambda

        async def call(messages: list[BaseMessage]) -> Any:
            reservation = await self.reserve(payload(messages), stage)
            try:
                answer = await runnable.ainvoke(messages)
            except BaseException as exc:
                self.settle_failed(reservation, exc)
                raise
            meta = getattr(answer.get("raw"), "usage_metadata", None) or {}
            self.settle(reservation, int(meta.get("input_tokens", 0)), int(meta.get("output_tokens", 0)))
            return answer

        return RunnableLambda(call, name=f"spend_guarded_{stage}")


# -- the estimate ---------------------------------------------------------------------------------------


class CacheHistory(BaseModel):
    """What earlier answers of the same model say: how often a critique accepted, how long answers were."""

    calls: int = 0
    critiques: int = 0
    accept_rate: float | None = None
    mean_output_tokens: dict[str, float] = Field(default_factory=dict)

    @classmethod
    def from_cache(cls, cache: KnowledgeCache, model: str) -> CacheHistory:
        rows = cache.history(model)
        history = cls(calls=len(rows))
        sums: dict[str, list[int]] = {}
        accepted = 0
        for stage, output, output_tokens in rows:
            if output_tokens > 0:
                sums.setdefault(stage, []).append(output_tokens)
            if stage == "critique":
                history.critiques += 1
                accepted += bool(output.get("accept"))
        history.mean_output_tokens = {stage: sum(v) / len(v) for stage, v in sums.items()}
        if history.critiques:
            history.accept_rate = accepted / history.critiques
        return history


class StageEstimate(BaseModel):
    """One stage's calls, tokens and cost: ``*_max`` an upper bound, the others the expected figure."""

    calls: float = 0.0
    calls_max: int = 0
    exact_calls: int = Field(default=0, description="calls whose request was rendered and counted exactly")
    cached: int = Field(default=0, description="calls the cache answers (not paid)")
    input_tokens: float = 0.0
    input_tokens_max: int = 0
    output_tokens: float = 0.0
    output_tokens_max: int = 0
    cost: float = 0.0
    cost_max: float = 0.0


class SpendEstimate(BaseModel):
    """What a build would send, per stage, before anything is sent."""

    posts: int = 0
    posts_cached: int = Field(default=0, description="posts the cache answers completely")
    rounds: int = 0
    stages: dict[str, StageEstimate] = Field(default_factory=lambda: {s: StageEstimate() for s in STAGES})
    counter: str = ""
    counter_error: float = 0.0
    prices: tuple[float, float] = (0.0, 0.0)
    max_output_tokens: int = 0
    history: CacheHistory = Field(default_factory=CacheHistory)
    skipped: dict[str, str] = Field(default_factory=dict, description="posts that cannot be built, and why")

    def total(self) -> StageEstimate:
        total = StageEstimate()
        for stage in self.stages.values():
            for name in StageEstimate.model_fields:
                setattr(total, name, getattr(total, name) + getattr(stage, name))
        return total

    @property
    def calls_max(self) -> int:
        return self.total().calls_max

    def rows(self) -> list[list[str]]:
        """Table rows: stage, calls, cached, input tokens, output tokens, cost (expected / at most)."""

        def pair(expected: float, most: float, money: bool = False) -> str:
            if money:
                return f"{expected:.4f} / {most:.4f}"
            return f"{expected:,.0f} / {most:,.0f}" if round(expected) != most else f"{most:,.0f}"

        rows = []
        for name, s in [*self.stages.items(), ("total", self.total())]:
            rows.append(
                [
                    name,
                    pair(s.calls, s.calls_max),
                    f"{s.cached:,}",
                    pair(s.input_tokens, s.input_tokens_max),
                    pair(s.output_tokens, s.output_tokens_max),
                    pair(s.cost, s.cost_max, money=True),
                ]
            )
        return rows


class DryRunCache:
    """A read-only view of a knowledge cache for dry runs: answers are read, nothing is claimed or written,
    and the hits per stage are counted (they tell where in its rounds a post stands)."""

    def __init__(self, cache: KnowledgeCache | None) -> None:
        self._cache = cache
        self.lease_s = 3600.0
        self.hits: list[str] = []

    def get_call(self, key: str) -> Any:
        found = self._cache.get_call(key) if self._cache is not None else None
        if found is not None:
            self.hits.append(key)
        return found

    def claim(self, key: str) -> str:
        return "mine"

    def renew(self, key: str) -> None:
        pass

    def release(self, key: str) -> None:
        pass

    # The async twins the chain calls (KnowledgeCache's names): reads answered, writes dropped.
    async def alookup(self, key: str) -> Any:
        found = self.get_call(key)
        return "mine" if found is None else found

    async def aget_call(self, key: str) -> Any:
        return self.get_call(key)

    async def arenew(self, key: str) -> None:
        pass

    def put_call_soon(self, key: str, **call: Any) -> Future[None]:
        done: Future[None] = Future()
        done.set_result(None)
        return done

    def release_soon(self, key: str) -> None:
        pass

    def stage(self, key: str) -> str:
        assert self._cache is not None
        return self._cache.call_stage(key) or "generate"


class SpendEstimator:
    """Walks posts through a dry chain and adds up what their uncached calls would send (module docs).

    One estimator may take the posts of several builds (an experiment's runs): a call they share is
    counted once.
    """

    def __init__(
        self,
        *,
        counter: TokenCounter,
        prices: tuple[float, float],
        max_output_tokens: int,
        history: CacheHistory | None = None,
    ) -> None:
        self.counter = counter
        self.prices = prices
        self.max_output_tokens = max_output_tokens
        self.history = history or CacheHistory()
        self.estimate = SpendEstimate(
            counter=counter.name,
            counter_error=counter.error,
            prices=prices,
            max_output_tokens=max_output_tokens,
            history=self.history,
        )
        self._seen: set[tuple[str, str, int]] = set()
        self._payloads: dict[str, Callable[[list], dict[str, Any]]] = {}
        self._last: tuple[str, dict[str, Any]] | None = None

    def wrap(self, stage: Stage, runnable: Runnable, payload: Callable[[list], dict[str, Any]]) -> Runnable:
        """The chain's hook in a dry run: render the request, keep it, send nothing."""
        from langchain_core.runnables import RunnableLambda

        self._payloads[stage] = payload

        async def call(messages: list[BaseMessage]) -> Any:
            self._last = (stage, payload(messages))
            raise _DryRunStop(stage)

        return RunnableLambda(call, name=f"dry_run_{stage}")

    async def add(self, chain: Any, peek: DryRunCache, post: Any, demonstrations: Sequence[Any]) -> None:
        """Add one post: its cached calls, the first uncached call (counted exactly), and the rest (bounds)."""
        from .knowledge import prompt_variables

        estimate = self.estimate
        estimate.posts += 1
        estimate.rounds = chain.rounds
        peek.hits.clear()
        self._last = None
        try:
            result = await chain.ainvoke(post, demonstrations)
        except LLMCallError as exc:
            if exc.kind != "dry_run" or self._last is None:
                raise
            result = None
        hit_stages = [peek.stage(key) for key in peek.hits]
        for stage in hit_stages:
            estimate.stages[stage].cached += 1
        if result is not None:
            estimate.posts_cached += 1
            return
        assert self._last is not None
        stage, payload = self._last
        # Where the post stands: the rounds its cached critiques took.
        round_ = hit_stages.count("critique") + (stage == "critique")
        # A call is named by its request; what follows it, by that name and its place in the rounds.
        anchor = content_key(payload=payload)
        self._add((anchor, stage, round_), stage, 1.0, self.counter.count(payload), None, exact=True)
        variables, _ = prompt_variables(post, demonstrations, max_text_chars=chain.max_text_chars)
        empty = {**variables, "knowledge": "", "critique": ""}
        base = {
            name: self.counter.count(self._payloads[name](chain.messages(name, empty)))
            for name in ("critique", "revise")
        }
        revise = chain.reflection == "revise"
        for later, number, likely in _later_calls(stage, round_, chain.rounds, self.history.accept_rate, revise=revise):
            # Its prompt holds the answers before it: bounded by max_tokens each, expected at their means
            # (when dropping, a later critique reads a part of what generate wrote).
            producer = "generate" if number == 1 or not revise else "revise"
            if later == "critique":
                most = base["critique"] + self.max_output_tokens
                expected = base["critique"] + self._mean(producer)
            else:
                most = base["revise"] + 2 * self.max_output_tokens
                expected = base["revise"] + self._mean(producer) + self._mean("critique")
            self._add((anchor, later, number), later, likely, most, expected, exact=False)

    def _mean(self, stage: str) -> float:
        return self.history.mean_output_tokens.get(stage, float(self.max_output_tokens))

    def _add(
        self,
        name: tuple[str, str, int],
        stage: str,
        likely: float,
        input_max: int,
        input_expected: float | None,
        *,
        exact: bool,
    ) -> None:
        if name in self._seen:  # another build of the same estimate sends this very call
            return
        self._seen.add(name)
        s = self.estimate.stages[stage]
        raised = math.ceil(input_max * (1 + self.counter.error))
        expected_in = input_max if input_expected is None else input_expected
        expected_out = self._mean(stage)
        s.calls += likely
        s.calls_max += 1
        s.exact_calls += exact
        s.input_tokens += likely * expected_in
        s.input_tokens_max += raised
        s.output_tokens += likely * expected_out
        s.output_tokens_max += self.max_output_tokens
        s.cost += likely * _cost(self.prices, expected_in, expected_out)
        s.cost_max += _cost(self.prices, raised, self.max_output_tokens)


def _cost(prices: tuple[float, float], input_tokens: float, output_tokens: float) -> float:
    return (input_tokens * prices[0] + output_tokens * prices[1]) / 1e6


def _later_calls(
    stage: str, round_: int, rounds: int, accept: float | None, *, revise: bool = True
) -> list[tuple[Stage, int, float]]:
    """The calls after an uncached one: ``(stage, round, probability)``; with no accept rate, all of them.
    Without ``revise`` (``reflection="drop_unsupported"``) a round is its critique alone."""
    reject = 1.0 - (accept or 0.0)
    likely = 1.0
    calls: list[tuple[Stage, int, float]] = []
    start = round_ + 1 if stage != "generate" else 1
    if stage == "critique":
        likely *= reject
        if revise:
            calls.append(("revise", round_, likely))
    for number in range(start, rounds + 1):
        calls.append(("critique", number, likely))
        likely *= reject
        if revise:
            calls.append(("revise", number, likely))
    return calls
