"""Pools of demonstrations: the human-written ones inside the KECPM prompts, and any labelled posts.

The KECPM release ships the authors' ChatGPT prompts (``train_answers_of_top2.json``, JSON Lines of
``{"prompt", "content"}``). Each prompt holds two retrieved demonstrations written by people, as blocks::

    Text:<post text>
    Image descriptions:<caption>
    Answer:The relation between X (person) and Y (organization) is "member of". Reasoning: ...

followed by the query block, whose ``Answer:`` is empty. :func:`read_human_demonstrations` parses every
demonstration block, reads the quintuples of its answer and keeps each distinct demonstration once.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path

from ..answers import parse_answer
from ..errors import DataError, Problem
from ..paths import require_data_dir
from ..post_files import read_post_file
from ..records import Demonstration, Post, Quintuple

__all__ = [
    "HUMAN_POOL_FILE",
    "demonstration_id",
    "demonstrations_from_posts",
    "human_pool",
    "load_pool",
    "parse_prompt_demonstrations",
    "read_human_demonstrations",
]

#: Where the human demonstrations live, relative to the data folder.
HUMAN_POOL_FILE = Path("jmere/few_shot/seed_17/train_answers_of_top2.json")

_BLOCK = re.compile(
    r"^Text:(?P<text>[^\n]*)\nImage descriptions:(?P<image>[^\n]*)\nAnswer:(?P<answer>.*?)(?=\n[ \t]*\nText:|\Z)",
    re.DOTALL | re.MULTILINE,
)


def parse_prompt_demonstrations(prompt: str) -> list[tuple[str, str, str]]:
    """The ``(text, image description, answer)`` of each demonstration block of a KECPM prompt.

    Blocks with an empty answer (the query at the end) are left out.

    >>> demo = "Text:A\\nImage descriptions:B\\nAnswer:C"
    >>> query = "Text:Q\\nImage descriptions:R\\nAnswer:"
    >>> parse_prompt_demonstrations("Instructions.\\n\\n" + demo + "\\n\\n" + query)
    [('A', 'B', 'C')]
    """
    found = []
    for match in _BLOCK.finditer(prompt):
        text, image, answer = (match.group(name).strip() for name in ("text", "image", "answer"))
        if answer:
            found.append((text, image, answer))
    return found


def _answer_quintuples(answer: str) -> tuple[Quintuple, ...]:
    """The quintuples a human answer states; ValueError naming a relation sentence that does not parse
    (an unknown type or relation), so a bad demonstration is reported, not silently shortened."""
    parsed = parse_answer(answer)
    broken = [piece for piece in parsed.invalid if piece.lower().startswith("the relation between")]
    if broken:
        raise ValueError(f"answer sentence not understood (unknown type or relation?): {broken[0]!r}")
    return tuple(parsed.quintuples)


def demonstration_id(prefix: str, text: str, image_description: str) -> str:
    """``prefix-`` and a hash of the text and image description: the id of a demonstration given without
    one (sha1, as stores written by earlier releases hold these ids)."""
    digest = hashlib.sha1(f"{text}\n{image_description}".encode()).hexdigest()[:12]
    return f"{prefix}-{digest}"


def read_human_demonstrations(path: str | Path, *, lenient: bool = False) -> list[Demonstration]:
    """The distinct human-written demonstrations inside a file of KECPM prompts (JSON Lines).

    Each demonstration gets the id ``human-<hash of text and image description>`` and ``source="human"``;
    repeats (the same demonstration retrieved for many prompts) are kept once, at first sight.
    Raises :class:`~kecpm.errors.DataError` listing every bad line or answer, unless ``lenient``,
    which skips them.

    >>> demos = read_human_demonstrations("few_shot/seed_17/train_answers_of_top2.json")  # doctest: +SKIP
    >>> len(demos)  # doctest: +SKIP
    43
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    found: dict[str, Demonstration] = {}
    problems: list[Problem] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            prompt = json.loads(line)["prompt"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            problems.append(Problem(f"not a JSON object with a 'prompt': {exc}", source=path, line=number))
            continue
        blocks = parse_prompt_demonstrations(prompt) if isinstance(prompt, str) else []
        if not blocks:
            problems.append(
                Problem("the prompt holds no Text/Image descriptions/Answer block", source=path, line=number)
            )
        for text, image, answer in blocks:
            demo_id = demonstration_id("human", text, image)
            if demo_id in found:
                continue
            try:
                found[demo_id] = Demonstration(
                    id=demo_id,
                    text=text,
                    image_description=image,
                    quintuples=_answer_quintuples(answer),
                    answer=answer,
                    source="human",
                )
            except ValueError as exc:
                problems.append(Problem(str(exc), source=path, line=number, record=text[:60]))
    if problems and not lenient:
        raise DataError(problems)
    return list(found.values())


def _holds_prompts(path: Path) -> bool:
    """Whether a file's first record is a KECPM prompt (``prompt``, no ``token``) rather than a post."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        first = next((line for line in lines if line.strip()), "")
    try:
        record = json.loads(first)
    except json.JSONDecodeError:
        return False  # an array, or not JSON: the post reader says what it is
    return isinstance(record, dict) and "prompt" in record and "token" not in record


def human_pool(data_dir: str | Path | None = None) -> list[Demonstration]:
    """The human-written demonstrations of the KECPM release (about 43), from the data folder."""
    return read_human_demonstrations(require_data_dir(data_dir) / HUMAN_POOL_FILE)


def demonstrations_from_posts(posts: Sequence[Post], *, source: str = "") -> list[Demonstration]:
    """One demonstration per labelled post (its text, joined image descriptions and gold quintuples)."""
    return [Demonstration.from_post(post, source=source) for post in posts]


def load_pool(pool: str | Path, *, data_dir: str | Path | None = None, split: str = "train") -> list[Demonstration]:
    """A pool by name or path: ``"human"``; a KECPM seed folder (its ``split``); or a labelled post file
    (KECPM, with its sibling caption file, or MNRE ``.txt``). Posts are read by
    :func:`kecpm.post_files.read_post_file`; one without an image description is a text-only
    demonstration.

    >>> demos = load_pool("human")  # doctest: +SKIP
    >>> demos = load_pool("data/jmere/few_shot/seed_17", split="train")  # doctest: +SKIP
    """
    if str(pool) == "human":
        return human_pool(data_dir)
    path = Path(pool)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such pool (give 'human', a KECPM seed folder or a labelled file)")
    if path.is_file() and _holds_prompts(path):
        raise DataError(
            Problem(
                "a file of KECPM prompts (JSON lines of 'prompt' and 'content', like train_answers_of_top2.json), "
                "not labelled posts: for the human demonstrations it holds, use the pool 'human' "
                "(kecpm index build --pool human --data-dir DIR, DIR holding jmere/few_shot/seed_17/)",
                source=path,
            )
        )
    read = read_post_file(path, split=split, knowledge=False)
    source = f"{path.name}/{split}" if path.is_dir() else read.split
    return demonstrations_from_posts(read.posts, source=source)
