"""Posts -> the span-pair model's encoded examples, and batches of them -> the network's inputs.

A post is read as ``[CLS] post [SEP] context [SEP] ...`` (the template's segments); its spans are every
run of up to ``max_span_width`` post words. With ``context_mentions`` each span also gets its first
whole-word mention in the context (image description, knowledge), with ``context_comentions`` a bit per
context sentence that mentions it, with ``mention_shapes`` how the context writes it (see
:data:`MENTION_SHAPES`): :class:`ContextIndex` finds them.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ...labels import ENTITY_TYPES, RELATIONS
from ...records import Post
from ..inputs import AssembledInput, InputAssembler
from .config import SpanPairConfig

__all__ = [
    "DISTANCE_BUCKETS",
    "MENTION_SHAPES",
    "SHAPES",
    "ContextIndex",
    "EncodedPost",
    "InputEncoder",
    "Mention",
    "additive_mask",
    "distance",
    "overlap",
    "pair_rows",
    "shared_sentence",
    "span_shapes",
    "word_shape",
]

DISTANCE_BUCKETS = (1, 2, 3, 4, 6, 9, 15, 10**9)  # upper bounds of the word gaps

# Word shapes the lowercasing encoder loses; "none" stands for the word before the first or after the last.
SHAPES = (
    "none", "lower", "capitalized", "upper", "mixed", "handle", "hashtag", "hash", "at",
    "number", "alnum", "punct", "url", "other",
)  # fmt: skip
_SHAPE = {name: k for k, name in enumerate(SHAPES)}

# How the context writes a span, weakest first; a span gets the strongest over all its mentions. A knowledge
# sentence that opens with it is about it ("Chicago is a city ..."), and a capital there marks a name even
# where the post writes it in lower case; the uncased encoder sees neither.
MENTION_SHAPES = ("none", "lower", "capitalized", "sentence_start")
_URL = re.compile(r"(?:https?://|www\.)", re.IGNORECASE)
_TEXT_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=65536)
def word_shape(word: str) -> int:
    """The index in :data:`SHAPES` of a word's shape: its case pattern, or what kind of token it is."""
    if word in ("#", "@"):
        return _SHAPE["hash" if word == "#" else "at"]
    if word[:1] in ("@", "#") and len(word) > 1:
        return _SHAPE["handle" if word[0] == "@" else "hashtag"]
    if _URL.match(word):
        return _SHAPE["url"]
    letters = [c for c in word if c.isalpha()]
    digits = any(c.isdigit() for c in word)
    if not letters:
        if digits:
            return _SHAPE["number"]
        return _SHAPE["punct"] if all(not c.isalnum() and c.isascii() for c in word) else _SHAPE["other"]
    if digits:
        return _SHAPE["alnum"]
    if all(c.islower() for c in letters):
        return _SHAPE["lower"]
    if all(c.isupper() for c in letters):
        return _SHAPE["upper"] if len(letters) > 1 else _SHAPE["capitalized"]
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return _SHAPE["capitalized"]
    return _SHAPE["mixed"]


@dataclass
class EncodedPost:
    ids: list[int]
    type_ids: list[int]
    word_first: list[int]
    word_last: list[int]
    spans: list[tuple[int, int]]
    shapes: list[tuple[int, int, int, int]]  # per span with word_shapes: first, last, previous, next word
    mentions: list[tuple[int, int]]  # per span, its first mention's token range in ids; (0, 0): none
    sentence_sets: list[int]  # per span, a bit per context sentence that mentions it
    mention_shapes: list[int]  # per span with mention_shapes: its index in MENTION_SHAPES
    sentences: list[tuple[int, int]]  # each context sentence's token range in ids
    span_labels: list[int]
    pairs: dict[tuple[int, int], int]  # (head span index, tail span index) -> relation id
    knowledge_start: int | None = None  # where the first segment holding knowledge begins in ids
    # training with knowledge_dropout: the same post (or window) encoded without its knowledge
    without_knowledge: EncodedPost | None = None


@dataclass
class InputEncoder:
    """Encodes posts for one span-pair model: its tokenizer (a fast one), config and input assembler."""

    tokenizer: Any
    config: SpanPairConfig
    assembler: InputAssembler
    use_types: bool  # whether context segments get token type 1 (the encoder has two token types)
    _word_cache: dict[str, list[int]] = field(default_factory=dict, repr=False)
    _text_cache: dict[str, tuple[list[int], list[tuple[int, int]]]] = field(default_factory=dict, repr=False)
    _backend: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self._backend is None:
            from tokenizers import Tokenizer

            # The Rust tokenizer, called directly (its Python wrapper cost more than the call), as a copy
            # without the padding and truncation a tokenizer.json may carry (all-MiniLM-L6-v2's pads and
            # cuts at 128), which the wrapper resets on every call and the bare tokenizer would apply.
            self._backend = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
            self._backend.no_padding()
            self._backend.no_truncation()

    def copy(self) -> InputEncoder:
        """Another encoder sharing the tokenizer and assembler, with its own word cache."""
        return InputEncoder(
            self.tokenizer, self.config, self.assembler, self.use_types, dict(self._word_cache), _backend=self._backend
        )

    def _tokens(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """A text's token ids and character offsets, without special tokens. Memoized: fitting a post to
        the length limit counts its context's tokens, then encoding reads them again with offsets."""
        found = self._text_cache.get(text)
        if found is None:
            if len(self._text_cache) >= _TEXT_CACHE_SIZE:
                self._text_cache.clear()  # a few posts' worth is all that is ever reused
            encoding = self._backend.encode(text, add_special_tokens=False)
            found = self._text_cache[text] = (encoding.ids, encoding.offsets)
        return found

    def _ids(self, text: str) -> list[int]:
        return self._tokens(text)[0] if text else []

    def _word_ids(self, word: str) -> list[int]:
        cached = self._word_cache.get(word)
        if cached is None:
            # A word the tokenizer drops (a lone control or zero-width character) still needs a vector.
            cached = self._ids(word) or [self.tokenizer.unk_token_id]
            self._word_cache[word] = cached
        return cached

    def _cost(self, assembled: AssembledInput) -> int:
        total = 1  # [CLS]
        for segment in assembled.segments:
            if segment.role == "text":
                total += len(self._ids(segment.before)) + len(self._ids(segment.after))
                total += sum(len(self._word_ids(w)) for w in assembled.words)
            else:
                total += len(self._ids(segment.text))
            total += 1  # [SEP]
        return total

    def text_cost(self, post: Post) -> int:
        """The tokens of the post's text-only input (special tokens and template words included)."""
        return self._cost(self.assembler.assemble(post).text_only())

    def word_costs(self, words: Sequence[str]) -> list[int]:
        """The subword tokens of each word, as the input holds them."""
        return [len(self._word_ids(w)) for w in words]

    def _cut(self, text: str, drop: int) -> str:
        ids, offsets = self._tokens(text)
        keep = len(ids) - drop
        return text[: offsets[keep - 1][1]] if keep > 0 else ""

    def encode(self, post: Post, *, with_labels: bool) -> EncodedPost:
        """A post's token ids, spans and context mentions; with its gold span and pair labels for training."""
        assembled = self.assembler.fit(post, budget=self.config.max_length, cost=self._cost, cut=self._cut)
        ids = [self.tokenizer.cls_token_id]
        type_ids = [0]
        first: list[int] = []
        last: list[int] = []
        contexts: list[tuple[str, int, list[tuple[int, int]]]] = []  # (text, first token, offsets)
        knowledge_start = None
        for segment in assembled.segments:
            if segment.knowledge and knowledge_start is None:
                knowledge_start = len(ids)
            if segment.role == "text":
                piece = self._ids(segment.before)
                ids += piece
                for word in assembled.words:
                    first.append(len(ids))
                    ids += self._word_ids(word)
                    last.append(len(ids) - 1)
                ids += self._ids(segment.after)
                segment_type = 0
            else:
                piece, offsets = self._tokens(segment.text)
                contexts.append((segment.text, len(ids), offsets))
                ids += piece
                segment_type = 1 if self.use_types else 0
            ids.append(self.tokenizer.sep_token_id)
            type_ids += [segment_type] * (len(ids) - len(type_ids))
        n = len(assembled.words)
        spans = [(i, j) for i in range(n) for j in range(i + 1, min(n, i + self.config.max_span_width) + 1)]
        config = self.config
        wanted = config.context_mentions or config.context_comentions or config.mention_shapes
        # the knowledge gate needs the context's sentences, not the mentions
        context_index = ContextIndex(contexts if wanted or config.knowledge_gate else [], shapes=config.mention_shapes)
        found = context_index.span_mentions(assembled.words, spans) if wanted else []
        mentions = [m.first for m in found] if config.context_mentions else []
        sentence_sets = [m.sentences for m in found] if config.context_comentions else []
        mention_shapes = [m.shape for m in found] if config.mention_shapes else []
        shapes = span_shapes(assembled.words, spans) if config.word_shapes else []
        labels, pairs = self._labels(post, spans) if with_labels else ([0] * len(spans), {})
        return EncodedPost(
            ids,
            type_ids,
            first,
            last,
            spans,
            shapes,
            mentions,
            sentence_sets,
            mention_shapes,
            context_index.sentences,
            labels,
            pairs,
            knowledge_start,
        )

    def _labels(self, post: Post, spans: Sequence[tuple[int, int]]) -> tuple[list[int], dict[tuple[int, int], int]]:
        """Per span its gold type id (0: none), and the gold relation id of each pair of span indices."""
        labels = [0] * len(spans)
        pairs: dict[tuple[int, int], int] = {}
        index = {span: k for k, span in enumerate(spans)}
        for q in post.quintuples:
            found = []
            for entity in (q.head, q.tail):
                k = index.get(entity.span) if entity.span is not None else None
                if k is None:
                    self.assembler.stats["gold entities without a learnable span"] += 1
                else:
                    labels[k] = 1 + ENTITY_TYPES.index(entity.type)
                found.append(k)
            if None not in found:
                pairs.setdefault((found[0], found[1]), 1 + RELATIONS.index(q.relation))
        return labels, pairs

    def batch(self, examples: Sequence[EncodedPost]) -> dict[str, Any]:
        """The padded token tensors of some examples and the inputs of all their spans, in order;
        ``offsets[b]`` is where example ``b``'s spans begin."""
        import torch

        length = max(len(e.ids) for e in examples)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(examples), length), pad, dtype=torch.long)
        mask = torch.zeros((len(examples), length), dtype=torch.long)
        types = torch.zeros((len(examples), length), dtype=torch.long)
        batch, first, last, width, labels, offsets = [], [], [], [], [], []
        mention_start, mention_end, shapes, mention_shapes = [], [], [], []
        isolated: list[tuple[int, int]] = []
        gated: list[tuple[int, int, int]] = []  # (example, first token, end) of each knowledge sentence
        for b, e in enumerate(examples):
            ids[b, : len(e.ids)] = torch.tensor(e.ids)
            mask[b, : len(e.ids)] = 1
            if self.config.knowledge_isolation and e.knowledge_start is not None:
                isolated.append((b, e.knowledge_start))
            if self.config.knowledge_gate and e.knowledge_start is not None:
                gated += [(b, start, end) for start, end in e.sentences if start >= e.knowledge_start]
            types[b, : len(e.ids)] = torch.tensor(e.type_ids)
            offsets.append(len(batch))
            for i, j in e.spans:
                batch.append(b)
                first.append(e.word_first[i])
                last.append(e.word_last[j - 1])
                width.append(j - i)
            mention_start += [m[0] for m in e.mentions]
            mention_end += [m[1] for m in e.mentions]
            shapes += e.shapes
            mention_shapes += e.mention_shapes
            labels += e.span_labels
        return {
            "ids": ids,
            "mask": isolation_mask(mask, isolated) if isolated else mask,
            "types": types if self.use_types else None,
            "batch": torch.tensor(batch, dtype=torch.long),
            "first": torch.tensor(first, dtype=torch.long),
            "last": torch.tensor(last, dtype=torch.long),
            "width": torch.tensor(width, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "mention_start": torch.tensor(mention_start, dtype=torch.long),
            "mention_end": torch.tensor(mention_end, dtype=torch.long),
            "shapes": torch.tensor(shapes, dtype=torch.long).reshape(-1, 4),
            "mention_shapes": torch.tensor(mention_shapes, dtype=torch.long),
            "gated": torch.tensor(gated, dtype=torch.long).reshape(-1, 3),
            "offsets": offsets,
        }

    def pairs(
        self, examples: Sequence[EncodedPost], rows: Sequence[tuple[int, int, int]], offsets: Sequence[int]
    ) -> dict[str, Any]:
        """The network's inputs of the pairs ``rows`` (``(example, head span, tail span)``) of a batch."""
        import torch

        p = {
            "heads": [offsets[b] + h for b, h, _ in rows],
            "tails": [offsets[b] + tl for b, _, tl in rows],
            "batch": [b for b, _, _ in rows],
            "distance": [distance(examples[b].spans[h], examples[b].spans[tl]) for b, h, tl in rows],
        }
        if self.config.context_comentions:
            shared = [shared_sentence(examples[b], h, tl) for b, h, tl in rows]
            p["sentence_start"] = [r[0] for r in shared]
            p["sentence_end"] = [r[1] for r in shared]
        return {k: torch.tensor(v, dtype=torch.long) for k, v in p.items()}


def isolation_mask(mask: Any, isolated: Sequence[tuple[int, int]]) -> Any:
    """The additive attention mask ``(batch, 1, query, key)`` of a padded batch in which, for each ``(b,
    start)``, the tokens of example ``b`` before ``start`` see only each other (what ``knowledge_isolation``
    needs); the other examples see their whole input. A 4-D float mask works with every attention kernel."""

    visible = mask.bool()[:, None, None, :].repeat(1, 1, mask.shape[1], 1)
    for b, start in isolated:
        visible[b, 0, :start, start:] = False
    return additive_mask(visible)


def additive_mask(visible: Any) -> Any:
    """The additive float32 attention mask of a boolean one: 0 where a key is visible, the float32 minimum
    where it is not (so other additive terms, such as a gate's, can be summed onto it)."""
    import torch

    return torch.zeros(visible.shape).masked_fill(~visible, torch.finfo(torch.float32).min)


def pair_rows(
    examples: Sequence[EncodedPost], candidates_per_post: Sequence[Sequence[int]]
) -> list[tuple[int, int, int]]:
    """Every ordered pair of non-overlapping candidate spans, as ``(example, head, tail)`` rows."""
    return [
        (b, h, tl)
        for b, (e, candidates) in enumerate(zip(examples, candidates_per_post, strict=True))
        for h in candidates
        for tl in candidates
        if h != tl and not overlap(e.spans[h], e.spans[tl])
    ]


def span_shapes(words: Sequence[str], spans: Sequence[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """Per span, the :func:`word_shape` of its first and last words and of the words just before and after
    it (``none`` at the post's edges)."""
    shape = [word_shape(w) for w in words]
    edge = _SHAPE["none"]
    return [
        (shape[i], shape[j - 1], shape[i - 1] if i > 0 else edge, shape[j] if j < len(words) else edge)
        for i, j in spans
    ]


def overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def distance(head: tuple[int, int], tail: tuple[int, int]) -> int:
    """A bucket of the gap between two spans, offset by the bucket count when the tail comes first."""
    gap = tail[0] - head[1] if tail[0] >= head[1] else head[0] - tail[1]
    bucket = next(i for i, bound in enumerate(DISTANCE_BUCKETS) if gap < bound)
    return bucket + (len(DISTANCE_BUCKETS) if tail[0] < head[0] else 0)


class Mention(NamedTuple):
    """Where the context names a span: its first whole-word mention's token range (``(0, 0)``: none), a bit
    per context sentence that names it, and the strongest of its :data:`MENTION_SHAPES`."""

    first: tuple[int, int]
    sentences: int
    shape: int


_NOT_MENTIONED = Mention((0, 0), 0, 0)


class ContextIndex:
    """A post's context segments split into sentences, to find where a span's words are mentioned."""

    def __init__(self, contexts: Sequence[tuple[str, int, Sequence[tuple[int, int]]]], *, shapes: bool = False) -> None:
        self.shapes = shapes  # whether mentions() says how they are written (off, it leaves shape 0)
        # (folded text, as written, first token, offsets): found case-blind, shaped as written
        self.contexts = [
            (_fold(text), text, first_token, _TokenOffsets(offsets)) for text, first_token, offsets in contexts
        ]
        self.sentences: list[tuple[int, int]] = []  # token ranges in the whole input
        self._bounds: list[list[tuple[int, int, int]]] = []  # per context: (char end, sentence id, char start)
        for text, _, first_token, offsets in self.contexts:
            bounds = []
            for match in _SENTENCE.finditer(text):
                tokens = offsets.overlapping(match.start(), match.end())
                if tokens:
                    bounds.append((match.end(), len(self.sentences), match.start()))
                    self.sentences.append((first_token + tokens[0], first_token + tokens[-1] + 1))
            self._bounds.append(bounds)

    def span_mentions(self, words: Sequence[str], spans: Sequence[tuple[int, int]]) -> list[Mention]:
        """:meth:`mentions` of each span's words. A span that extends one whose text is nowhere in the
        context is not looked for (its text is not there either): most spans of a post are skipped so."""
        absent: dict[int, str] = {}  # first word -> the folded text of a span from it that is not there
        folded = [w.lower() for w in words]
        # lower() works per character, so a joined span keeps its length under it iff all its words do
        keeps_length = all(len(f) == len(w) for f, w in zip(folded, words, strict=True))
        found = []
        for i, j in spans:
            needle = " ".join(folded[i:j]) if keeps_length else _fold(" ".join(words[i:j]))
            missing = absent.get(i)
            if missing is not None and needle.startswith(missing):
                found.append(_NOT_MENTIONED)
                continue
            if not any(needle in haystack for haystack, _, _, _ in self.contexts):
                absent[i] = needle
                found.append(_NOT_MENTIONED)
                continue
            found.append(self.mentions(" ".join(words[i:j])))
        return found

    def mentions(self, surface: str) -> Mention:
        """The first whole-word, case-blind mention of ``surface``, the sentences that mention it and, with
        ``shapes``, how they write it (a span without a letter or digit is never mentioned)."""
        needle = _fold(surface)
        first, bits, shape = (0, 0), 0, 0
        if not any(c.isalnum() for c in needle):
            return _NOT_MENTIONED
        for (haystack, written, first_token, offsets), bounds in zip(self.contexts, self._bounds, strict=True):
            at = haystack.find(needle)
            while at != -1:
                end = at + len(needle)
                if (at == 0 or not haystack[at - 1].isalnum()) and (
                    end == len(haystack) or not haystack[end].isalnum()
                ):
                    if first == (0, 0):  # later mentions only add their sentence and shape
                        tokens = offsets.overlapping(at, end)
                        if tokens:
                            first = (first_token + tokens[0], first_token + tokens[-1] + 1)
                    sentence = next(((i, start) for bound, i, start in bounds if at < bound), None)
                    if sentence is not None:
                        bits |= 1 << sentence[0]
                    if self.shapes:
                        opens = sentence is not None and _OPENING.fullmatch(written, sentence[1], at) is not None
                        shape = max(
                            shape, _MENTION_SHAPE["sentence_start"] if opens else _written_shape(written[at:end])
                        )
                at = haystack.find(needle, at + 1)
        return Mention(first, bits, shape)


def _written_shape(mention: str) -> int:
    """``capitalized`` if the mention's first letter is a capital, else ``lower``."""
    letter = next((c for c in mention if c.isalpha()), "")
    return _MENTION_SHAPE["capitalized" if letter.isupper() else "lower"]


# What may stand before a span that opens its sentence: a template label ("knowledge: ") and punctuation.
_OPENING = re.compile(r"(?:[^\W\d_]+\s*:\s*)?[^\w]*")
_MENTION_SHAPE = {name: k for k, name in enumerate(MENTION_SHAPES)}


_SENTENCE = re.compile(r"\S.*?(?:[.!?](?=\s)|$)", re.DOTALL)


def shared_sentence(e: EncodedPost, head: int, tail: int) -> tuple[int, int]:
    """The token range of the first context sentence that mentions both spans; ``(0, 0)`` if none."""
    both = e.sentence_sets[head] & e.sentence_sets[tail]
    return e.sentences[(both & -both).bit_length() - 1] if both else (0, 0)


class _TokenOffsets:
    """A context's token character offsets, to find the tokens that overlap a character range. Offsets in
    order (as a tokenizer gives them) make those tokens one run, found by bisection; otherwise every
    token is looked at."""

    def __init__(self, offsets: Sequence[tuple[int, int]]) -> None:
        self.offsets = offsets
        self.starts = [a for a, _ in offsets]
        self.ends = [b for _, b in offsets]
        self.ordered = self.starts == sorted(self.starts) and self.ends == sorted(self.ends)

    def overlapping(self, start: int, end: int) -> Sequence[int]:
        if self.ordered:
            return range(bisect.bisect_right(self.ends, start), bisect.bisect_left(self.starts, end))
        return [k for k, (a, b) in enumerate(self.offsets) if a < end and b > start]


def _fold(text: str) -> str:
    """Lower case, unless that changes the length (then the tokenizer's offsets would no longer fit)."""
    lowered = text.lower()
    return lowered if len(lowered) == len(text) else text
