"""The records every stage shares: Entity, Quintuple, Post.

Spans are token offsets ``[start, end)`` into ``Post.tokens``. A Post validates that each span lies
inside its tokens and that the tokens spell the entity's name, so a stage never sees a broken record.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .hashing import content_key
from .labels import EntityType, Relation, parse_entity_type, parse_relation

__all__ = [
    "EMPTY_TEXT",
    "NO_WORDS",
    "Demonstration",
    "Entity",
    "Post",
    "PostContent",
    "PostInput",
    "PostText",
    "Quintuple",
    "Span",
    "has_words",
    "text_id",
]

Span = tuple[int, int]

EMPTY_TEXT = "the post's text is empty or only whitespace: give its words, or leave the record out"
NO_WORDS = "the post holds no words, only URLs, emoji or punctuation: nothing to extract, so it gets no quintuples"
_URL = re.compile(r"(?:[a-z][a-z0-9+.-]*://|www\.)\S*", re.IGNORECASE)


def has_words(tokens: Sequence[str]) -> bool:
    """Whether a post's tokens hold a word: a token with a letter or digit that is not a URL.

    Handles and hashtags are words: in JMERE they name entities (``@Rihanna``, ``# Knicks``: 39 of the
    1,228 gold entities of seed 17's train and val). A post of only URLs, emoji or punctuation is a
    valid post with nothing to extract, so the extractor gives it no quintuples, with a warning
    (:data:`NO_WORDS`), rather than failing it: such posts are common in real streams (a shared link),
    and one should never stop a batch.

    >>> has_words(["https://t.co/x", "\N{FACE WITH TEARS OF JOY}", "!"]), has_words(["@Rihanna"])
    (False, True)
    """
    return any(any(c.isalnum() for c in token) and not _URL.fullmatch(token) for token in tokens)


class Entity(BaseModel):
    """A named entity: its surface name, its type and, when known, its token span ``[start, end)``."""

    model_config = ConfigDict(frozen=True)

    name: Annotated[str, Field(min_length=1)]
    type: EntityType
    span: Span | None = None

    @field_validator("type", mode="before")
    @classmethod
    def _read_type(cls, value: object) -> object:
        return parse_entity_type(value) if isinstance(value, str) else value

    @field_validator("span")
    @classmethod
    def _check_span(cls, value: Span | None) -> Span | None:
        if value is not None and not 0 <= value[0] < value[1]:
            raise ValueError(f"span {list(value)} is not a non-empty [start, end) with start >= 0")
        return value


class Quintuple(BaseModel):
    """(head entity, head type, tail entity, tail type, relation); direction matters."""

    model_config = ConfigDict(frozen=True)

    head: Entity
    tail: Entity
    relation: Relation

    @field_validator("relation", mode="before")
    @classmethod
    def _read_relation(cls, value: object) -> object:
        return parse_relation(value) if isinstance(value, str) else value

    def surface(self) -> tuple[str, str, str, str, str]:
        """The five strings compared by surface matching: head, head type, tail, tail type, relation."""
        return (
            self.head.name,
            self.head.type.value,
            self.tail.name,
            self.tail.type.value,
            self.relation.value,
        )


class Post(BaseModel):
    """A social-media post: text (as tokens), its image, and what is known about it.

    ``tokens`` and ``text`` fill each other in: given only ``text``, the tokens are its whitespace
    split; given only ``tokens``, the text is their join with single spaces (the JMERE convention).
    """

    model_config = ConfigDict(validate_assignment=False)

    id: Annotated[str, Field(min_length=1)]
    tokens: list[str] = Field(default_factory=list)
    text: str = ""
    img_id: str | None = None
    image_path: Path | None = None
    image_descriptions: list[str] = Field(default_factory=list)
    knowledge: list[str] = Field(default_factory=list)
    quintuples: list[Quintuple] = Field(default_factory=list)

    @model_validator(mode="after")
    def _fill_and_check(self) -> Self:
        if not self.tokens and self.text:
            self.tokens = self.text.split()
        if not self.text and self.tokens:
            self.text = " ".join(self.tokens)
        if not any(token.strip() for token in self.tokens):
            raise ValueError(EMPTY_TEXT)
        for q in self.quintuples:
            for role, entity in (("head", q.head), ("tail", q.tail)):
                if entity.span is None:
                    continue
                start, end = entity.span
                if end > len(self.tokens):
                    raise ValueError(
                        f"{role} {entity.name!r}: span [{start}, {end}) is out of range for {len(self.tokens)} tokens"
                    )
                spelled = " ".join(self.tokens[start:end])
                if spelled != entity.name:
                    raise ValueError(
                        f"{role} {entity.name!r}: span [{start}, {end}) spells {spelled!r}, not the entity name"
                    )
        return self

    @property
    def image_description(self) -> str:
        """All image descriptions joined into one string ("" when there is none)."""
        return " ".join(d.strip() for d in self.image_descriptions if d.strip())

    def entities(self) -> list[Entity]:
        """The distinct gold entities, in order of first mention in the quintuples."""
        seen: dict[Entity, None] = {}
        for q in self.quintuples:
            seen.setdefault(q.head)
            seen.setdefault(q.tail)
        return list(seen)


class Demonstration(BaseModel):
    """A labelled example shown to the LLM: a post's text and image description, its gold quintuples,
    and, when a person wrote one, the answer with its reasoning (the KECPM prompts' ``Answer:``)."""

    model_config = ConfigDict(frozen=True)

    id: Annotated[str, Field(min_length=1)]
    text: Annotated[str, Field(min_length=1)]
    image_description: str = ""
    quintuples: tuple[Quintuple, ...] = ()
    answer: str | None = None
    source: str = ""

    @classmethod
    def from_post(cls, post: Post, *, source: str = "", answer: str | None = None) -> Demonstration:
        return cls(
            id=post.id,
            text=post.text,
            image_description=post.image_description,
            quintuples=tuple(post.quintuples),
            answer=answer,
            source=source,
        )


def text_id(text: str) -> str:
    """The id of a post given without one: ``post-`` and a hash of its text (the same text, the same id)."""
    return "post-" + content_key(text=text)[:16]


class PostText(BaseModel):
    """A post as a caller describes it: its text and, when known, its image's description. The other
    post-input models (with knowledge; with an id and an image) and the tool schemas (the agent's, the
    extraction tool's) are this model or its subclasses, and share its :meth:`to_post`."""

    text: str = Field(min_length=1, description="the post's text, exactly as written")
    image_description: str = Field(default="", description="what the post's image shows, if known")

    @field_validator("image_description", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return "" if value is None else value

    @field_validator("text", mode="before")
    @classmethod
    def _has_text(cls, value: Any) -> Any:
        # before min_length: one plain sentence for "" and "   " alike
        if isinstance(value, str) and not value.strip():
            raise ValueError(EMPTY_TEXT)
        return value

    def to_post(self, **fields: Any) -> Post:
        """The Post: its id from the text unless the model or ``fields`` name one; the model's other Post
        fields (``knowledge``, ``image_path``) carried over; ``fields`` set any Post field."""
        values: dict[str, Any] = {
            "id": text_id(self.text),
            "text": self.text,
            "image_descriptions": [self.image_description] if self.image_description.strip() else [],
        }
        for name in ("id", "knowledge", "image_path"):
            if (value := getattr(self, name, None)) is not None:
                values[name] = value
        return Post(**{**values, **fields})


class PostContent(PostText):
    """:class:`PostText` and the post's background knowledge."""

    knowledge: list[str] = Field(default_factory=list, description="background knowledge sentences about the post")

    @field_validator("knowledge", mode="before")
    @classmethod
    def _one_string(cls, value: Any) -> Any:
        # Models often pass one string where a list is asked for.
        return [value] if isinstance(value, str) else value


class PostInput(PostContent):
    """One post as the pipeline takes it: :class:`PostContent` plus an id and an image (a file or bytes)."""

    id: str | None = Field(default=None, description="an id for caches and results (default: a hash of the text)")
    image_path: Path | None = None
    image_bytes: bytes | None = Field(default=None, repr=False)
