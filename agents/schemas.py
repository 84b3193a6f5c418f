"""What the knowledge agent reads from the LLM and what it hands back, as pydantic models.

The LLM-facing models (:class:`Knowledge`, :class:`Critique`) become the JSON schema of the function
the model is asked to call, so their field descriptions are part of the prompt and their limits
(item counts, string lengths) bound what a small model can ramble.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "STAGES",
    "BuildReport",
    "Critique",
    "Knowledge",
    "KnowledgeFailure",
    "KnowledgeResult",
    "Reflection",
    "SpendLimit",
    "SpendReport",
    "Stage",
    "StatementCheck",
    "Step",
    "Usage",
    "Verdict",
]

Stage = Literal["generate", "critique", "revise"]
STAGES: tuple[Stage, ...] = ("generate", "critique", "revise")
Verdict = Literal["supported", "plausible", "unsupported"]
Reflection = Literal["revise", "drop_unsupported"]
"""What a reflection round does with its critique: ask the LLM for a revised knowledge, or drop the
statements the critique marks unsupported (no further call)."""

Statement = Annotated[str, Field(min_length=3, max_length=200)]


class Knowledge(BaseModel):
    """Background knowledge about a post: short factual statements about its entities and their relations."""

    statements: list[Statement] = Field(
        min_length=1,
        max_length=6,
        description="One to six short factual sentences about the entities in the text and how they relate.",
    )

    @field_validator("statements", mode="after")
    @classmethod
    def _tidy(cls, statements: list[str]) -> list[str]:
        # Small models repeat themselves: keep each statement once, stripped, in order.
        seen: dict[str, None] = {}
        for statement in statements:
            seen.setdefault(" ".join(statement.split()))
        return [s for s in seen if len(s) >= 3] or statements


class StatementCheck(BaseModel):
    """The verdict on one numbered statement."""

    # No minimum: grammar-constrained decoding (llama.cpp) does not enforce one, and a check whose
    # number matches no statement is simply ignored, which beats re-asking a small model.
    index: int = Field(description="The number of the statement being judged (1 for the first).")
    verdict: Verdict = Field(
        description="supported: the text or image description says it; plausible: sound background knowledge; "
        "unsupported: not backed by the post, or wrong."
    )
    reason: str = Field(default="", max_length=150, description="Why, in one short sentence.")


class Critique(BaseModel):
    """A critique of background knowledge: a verdict per statement, what is missing, and whether to accept it."""

    checks: list[StatementCheck] = Field(max_length=12, description="One verdict per statement.")
    missing: list[Annotated[str, Field(max_length=300)]] = Field(
        default_factory=list,
        max_length=4,
        description="Background knowledge that is missing and would help identify the entities or relations.",
    )
    accept: bool = Field(description="true when the knowledge needs no revision.")


class Usage(BaseModel):
    """Calls and tokens spent (``calls`` answered by the LLM, ``cached`` answered by the cache)."""

    calls: int = 0
    cached: int = 0
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{name: getattr(self, name) + getattr(other, name) for name in Usage.model_fields})


class Step(BaseModel):
    """One stage of one round: what the LLM answered (or the cache returned) and what it cost."""

    stage: Stage
    round: int = Field(ge=0, description="0 for generate, 1.. for the reflection rounds.")
    template: str = Field(description="The template's ref, name@vN.")
    output: Knowledge | Critique
    usage: Usage = Field(default_factory=Usage)
    cached: bool = False
    key: str = Field(description="The cache key of this call.")


class KnowledgeResult(BaseModel):
    """The final knowledge of one post and the whole trajectory that led to it."""

    model_config = ConfigDict(frozen=True)

    post_id: str
    knowledge: list[str]
    steps: list[Step]
    accepted: bool = Field(description="Whether a critique accepted the final knowledge.")
    warnings: list[str] = Field(default_factory=list)

    @property
    def usage(self) -> Usage:
        total = Usage()
        for step in self.steps:
            total = total + step.usage
        return total


class KnowledgeFailure(BaseModel):
    """A post whose knowledge could not be built; a ``retryable`` one may succeed on a later run."""

    model_config = ConfigDict(frozen=True)

    post_id: str
    stage: Stage | None = None
    kind: str = Field(description="rate_limit, server, timeout, connection, schema, refusal, auth, input, ...")
    message: str
    retryable: bool = True


class SpendLimit(BaseModel):
    """A budget: money (in the currency of the prices) and/or tokens (input + output); either may be unset."""

    cost: float | None = Field(default=None, ge=0, description="most money the run may spend")
    tokens: int | None = Field(default=None, ge=0, description="most input + output tokens the run may use")

    @model_validator(mode="after")
    def _something(self) -> SpendLimit:
        if self.cost is None and self.tokens is None:
            raise ValueError("a budget needs a cost or a number of tokens")
        return self

    def describe(self) -> str:
        parts = [f"{self.cost:g}" if self.cost is not None else "", f"{self.tokens:,} tokens" if self.tokens else ""]
        return " and ".join(p for p in parts if p)


class SpendReport(BaseModel):
    """What a guarded run spent, and whether the budget stopped it."""

    limit: SpendLimit
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    stopped: bool = Field(default=False, description="a request was refused: the run stopped before crossing")
    refused: str = Field(default="", description="why the first refused request was refused")

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class BuildReport(BaseModel):
    """What a batch build did: counts, usage per stage, every failure, wall time."""

    total: int = 0
    succeeded: int = 0
    failures: list[KnowledgeFailure] = Field(default_factory=list)
    warnings: dict[str, list[str]] = Field(default_factory=dict)
    usage: dict[str, Usage] = Field(default_factory=dict)
    wall_s: float = 0.0
    left: list[str] = Field(
        default_factory=list, description="posts not built because the budget ran out (a rerun resumes them)"
    )
    spend: SpendReport | None = Field(default=None, description="what the spend guard let through, if any")
    results: list[KnowledgeResult] = Field(default_factory=list, exclude=True)

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def calls(self) -> int:
        return sum(u.calls for u in self.usage.values())

    @property
    def cached(self) -> int:
        return sum(u.cached for u in self.usage.values())
