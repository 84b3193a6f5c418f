"""Input assembly: image description + text + knowledge, from a template in ``prompts/``.

The template (default ``extract_input@v1``) has one message per segment; the one holding ``{text}``
is the post's own segment, the others are context (``{image_description}``, ``{knowledge}``). A
context segment whose parts are all switched off or empty is left out. Models join the kept segments
with their own separator (``[SEP]`` for an encoder, a newline for a generative model).

Truncation policy (:meth:`InputAssembler.fit`): the post's own segment is never cut; a post that
alone exceeds the model's limit raises :class:`InputTooLong`, naming the record. While the input is
too long, knowledge sentences are dropped from the last one backwards; then the last context segment
is cut token by token from its end (and dropped when nothing is left). Every such step is counted in
:attr:`InputAssembler.stats`, which the models log.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import DataError, Problem
from ..prompts import PromptTemplateFile, load_template
from ..records import Post

__all__ = [
    "DEFAULT_TEMPLATE",
    "INPUT_PRESETS",
    "AssembledInput",
    "InputAssembler",
    "InputParts",
    "InputTooLong",
    "Segment",
    "sentences_naming_post",
]

DEFAULT_TEMPLATE = "extract_input@v1"
_PLACEHOLDERS = ("text", "image_description", "knowledge")
_SENTINEL = "\x00TEXT\x00"
_WORD = re.compile(r"\w+")
# English function words of three letters or more: sharing one of these with the post does not make a
# knowledge sentence about the post.
_FUNCTION_WORDS = frozenset(
    "the and for with from that this these those are was were been being has have had not but its his her hers "
    "their they them our your you she him who whom what which when where why how all any can will would should "
    "could may might must into onto over under about after before than then there here also just via per".split()
)


class InputParts(BaseModel):
    """Which parts the extractor reads besides the text, and how many knowledge sentences.

    >>> InputParts.preset("imagecap_know").knowledge
    True
    >>> InputParts(image_description=False, knowledge=True, knowledge_sentences=1).name
    'know'
    """

    model_config = ConfigDict(frozen=True)

    image_description: bool = True
    knowledge: bool = True
    knowledge_sentences: int | None = Field(default=None, ge=1, description="the first N sentences; None: all")
    knowledge_filter: Literal["all", "naming_post"] = Field(
        default="all",
        description="'naming_post': only the sentences sharing a word (3+ letters, not a function word) with the "
        "post's text, before knowledge_sentences counts them",
    )

    @classmethod
    def preset(cls, name: str) -> InputParts:
        """One of the release's settings: ``imagecap_know``, ``imagecap``, ``know``, ``only_text``."""
        try:
            return INPUT_PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown input preset {name!r} (known: {', '.join(INPUT_PRESETS)})") from None

    @property
    def name(self) -> str:
        """The release's name of this combination."""
        if self.image_description:
            return "imagecap_know" if self.knowledge else "imagecap"
        return "know" if self.knowledge else "only_text"


INPUT_PRESETS: dict[str, InputParts] = {
    "imagecap_know": InputParts(image_description=True, knowledge=True),
    "imagecap": InputParts(image_description=True, knowledge=False),
    "know": InputParts(image_description=False, knowledge=True),
    "only_text": InputParts(image_description=False, knowledge=False),
}


@dataclass(frozen=True)
class Segment:
    """One kept message of the template. For the text segment, ``before``/``after`` are the template's
    words around ``{text}`` and ``text`` is the post; for context, ``text`` is the whole rendered message
    and ``knowledge`` says whether it holds knowledge."""

    role: Literal["text", "context"]
    text: str
    before: str = ""
    after: str = ""
    knowledge: bool = False

    def render(self) -> str:
        return f"{self.before}{self.text}{self.after}"


@dataclass(frozen=True)
class AssembledInput:
    """A post's input, segment by segment, with the post's words kept apart for span models."""

    post_id: str
    words: tuple[str, ...]
    segments: tuple[Segment, ...]
    knowledge_used: int = 0

    @property
    def text_segment(self) -> Segment:
        return next(s for s in self.segments if s.role == "text")

    @property
    def context(self) -> tuple[str, ...]:
        return tuple(s.text for s in self.segments if s.role == "context")

    def text_only(self) -> AssembledInput:
        return replace(self, segments=(self.text_segment,), knowledge_used=0)

    def render(self, separator: str = "\n") -> str:
        """The whole input as one string (what a generative model reads)."""
        return separator.join(s.render() for s in self.segments)


class InputTooLong(DataError):
    """A post's own text does not fit the model's limit (the text is never truncated)."""


@dataclass
class InputAssembler:
    """Builds a model's input from a Post with a template and the chosen parts.

    >>> from kecpm.synthetic import synthetic_posts
    >>> post = synthetic_posts(1)[0].model_copy(update={"knowledge": ["A fact.", "Another."]})
    >>> assembler = InputAssembler(parts=InputParts(knowledge_sentences=1))
    >>> assembler.assemble(post).render(" | ").endswith("knowledge: A fact.")
    True
    """

    template: PromptTemplateFile | None = None
    parts: InputParts = field(default_factory=InputParts)
    stats: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if self.template is None:
            self.template = load_template(DEFAULT_TEMPLATE)
        self._messages = [(m.content, _fields(m.content)) for m in self.template.messages]
        unknown = sorted({f for _, fields in self._messages for f in fields} - set(_PLACEHOLDERS))
        if unknown:
            raise ValueError(f"template {self.template.ref}: unknown placeholders {unknown} (known: {_PLACEHOLDERS})")
        holders = [fields.count("text") for _, fields in self._messages]
        if sum(holders) != 1:
            raise ValueError(f"template {self.template.ref}: exactly one message must hold {{text}} once")

    def assemble(self, post: Post, *, knowledge_limit: int | None = None) -> AssembledInput:
        """The post's segments with every enabled part, the first ``knowledge_limit`` sentences at most."""
        sentences = [s.strip() for s in post.knowledge if s.strip()] if self.parts.knowledge else []
        if self.parts.knowledge_filter == "naming_post":
            sentences = sentences_naming_post(sentences, post.tokens)
        if self.parts.knowledge_sentences is not None:
            sentences = sentences[: self.parts.knowledge_sentences]
        if knowledge_limit is not None:
            sentences = sentences[:knowledge_limit]
        values = {
            "text": _SENTINEL,
            "image_description": post.image_description if self.parts.image_description else "",
            "knowledge": " ".join(sentences),
        }
        segments = []
        for content, fields in self._messages:
            rendered = content.format(**values)
            if "text" in fields:
                before, _, after = rendered.partition(_SENTINEL)
                segments.append(Segment("text", " ".join(post.tokens), before, after))
            elif not fields or any(values[f] for f in fields):
                holds = "knowledge" in fields and bool(values["knowledge"])
                segments.append(Segment("context", rendered.strip(), knowledge=holds))
        return AssembledInput(post.id, tuple(post.tokens), tuple(segments), knowledge_used=len(sentences))

    def fit(
        self,
        post: Post,
        *,
        budget: int,
        cost: Callable[[AssembledInput], int],
        cut: Callable[[str, int], str],
    ) -> AssembledInput:
        """The post's input within ``budget`` tokens, by the module's truncation policy.

        ``cost`` counts an input's tokens as the model will see them (special tokens included);
        ``cut(text, n)`` returns ``text`` without its last ``n`` tokens.
        """
        assembled = self.assemble(post)
        needed = cost(assembled.text_only())
        if needed > budget:
            raise InputTooLong(
                Problem(
                    f"the post's text needs {needed} tokens, over the model's limit of {budget}; "
                    "the text is never truncated: shorten the post or use a model with a longer limit",
                    record=post.id,
                )
            )
        offered = kept = assembled.knowledge_used
        total = cost(assembled)
        while total > budget and kept > 0:
            kept -= 1
            assembled = self.assemble(post, knowledge_limit=kept)
            total = cost(assembled)
        if kept < offered:
            self.stats["knowledge sentences dropped"] += offered - kept
            self.stats["posts with knowledge dropped"] += 1
        cut_any = False
        while (excess := total - budget) > 0:
            context = [i for i, s in enumerate(assembled.segments) if s.role == "context"]
            if not context:  # only the text segment's own template words are left over the limit
                raise InputTooLong(Problem(f"the input needs {total} tokens, over {budget}", record=post.id))
            position = context[-1]
            shortened = cut(assembled.segments[position].text, excess).strip()
            segments = list(assembled.segments)
            if shortened:
                segments[position] = replace(segments[position], text=shortened)
            else:
                del segments[position]
            assembled = replace(assembled, segments=tuple(segments))
            total = cost(assembled)
            cut_any = True
        if cut_any:
            self.stats["posts with context cut"] += 1
        return assembled


def sentences_naming_post(sentences: Sequence[str], tokens: Sequence[str]) -> list[str]:
    """The sentences that share a word with the post: what a weak LLM writes about names that are not in the
    post (hallucinated people, places) cannot point the extractor at a span, only away from one.

    >>> sentences_naming_post(["Fairport is a town in New York.", "Gion is in Japan."], ["Fairport", ",", "NY"])
    ['Fairport is a town in New York.']
    """
    post_words = {w for token in tokens for w in _WORD.findall(token.lower())}
    post_words = {w for w in post_words if len(w) >= 3 and w not in _FUNCTION_WORDS}
    return [s for s in sentences if not post_words.isdisjoint(_WORD.findall(s.lower()))]


def _fields(content: str) -> list[str]:
    return [f.split(".")[0].split("[")[0] for _, f, _, _ in string.Formatter().parse(content) if f]
