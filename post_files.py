"""Posts on disk: the one module that reads and writes them.

- KECPM files (the JMERE format), a JSON array or JSON Lines of ``{"token", "img_id", "label_list"}``
  records. ``*_ofa_image_caption.json`` adds ``"image_caption": [str]`` to each record,
  ``*_ofa_knowledge.json`` (JSON Lines) adds caption and ``"knowledge": [str]``.
  ``label_list`` is a list of one-element lists, each holding
  ``{"beg_ent": {"name", "pos": [start, end), "tags"}, "sec_ent": {...}, "relation"}``.
- A post file ``X.json`` (or ``X.jsonl``) and its siblings ``X_ofa_image_caption.json`` and
  ``X_ofa_knowledge.json``: :func:`read_post_file` overlays them record by record when they exist;
  a post file without them is read as it is (its posts have no image description).
- A KECPM seed folder and a split (``seed_17``, ``"train"``): :func:`load_split`.
- MNRE v2 ``mnre_txt`` files: one Python dict literal per entity pair (``ast.literal_eval``),
  ``{'token', 'h': {'name', 'pos'}, 't': {...}, 'img_id', 'relation': '/per/org/member_of'}``, rebuilt
  into JMERE posts (pairs whose relation is not ``None``, grouped by tokens and image; the two
  ``alternate_names`` labels merged into one).

Every reader is strict (``DataError`` listing every problem, each naming its file, line and record) or
lenient (the valid posts, and the problems of the others). Records get ids from their image:
``img_id``, then ``img_id#2``, ``img_id#3``... for later records of the same image (the released splits
repeat a sentence when it has several quintuples). Writers reproduce the released files byte for byte.
"""

from __future__ import annotations

import ast
import json
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import DataError, Problem, describe_validation_error
from .records import Entity, Post, Quintuple

__all__ = [
    "CAPTIONS_SUFFIX",
    "KNOWLEDGE_SUFFIX",
    "PostFile",
    "load_split",
    "overlay",
    "parse_kecpm",
    "parse_mnre_label",
    "post_from_record",
    "post_to_record",
    "read_kecpm",
    "read_kecpm_records",
    "read_mnre",
    "read_mnre_pairs",
    "read_post_file",
    "read_posts",
    "read_texts",
    "split_name",
    "unlabelled_posts",
    "validate_kecpm",
    "validate_posts",
    "write_kecpm",
]

log = logging.getLogger(__name__)

CAPTIONS_SUFFIX = "_ofa_image_caption.json"
KNOWLEDGE_SUFFIX = "_ofa_knowledge.json"
_SIBLING_FIELDS = {CAPTIONS_SUFFIX: "image_descriptions", KNOWLEDGE_SUFFIX: "knowledge"}


# -- KECPM records ----------------------------------------------------------------------------------
def _is_json_lines(text: str) -> bool:
    return not text.lstrip().startswith("[")


def read_kecpm_records(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | Problem]]:
    """Yield ``(line, raw record)`` per record, or ``(line, Problem)`` where a record cannot be parsed.

    ``line`` is the 1-based line of a JSON Lines file, or the 1-based position in a JSON array.
    A missing file raises ``FileNotFoundError``; a broken array is one Problem at its position.
    """
    path = Path(path)
    try:
        # Bytes that are not UTF-8 become lone surrogates: only the records holding them are refused.
        text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    if _is_json_lines(text):
        yield from _records_by_line(path, text.splitlines(), _json_line, kind="a JSON object")
        return
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        message = f"malformed JSON array: {exc.msg} at line {exc.lineno} column {exc.colno}"
        yield exc.lineno, Problem(message, source=path, line=exc.lineno)
        return
    for position, value in enumerate(values, start=1):
        if not isinstance(value, dict):
            yield position, Problem("a record must be a JSON object", source=path, line=position)
            continue
        if _undecodable(json.dumps(value, ensure_ascii=False)) is not None:
            yield position, Problem("not valid UTF-8", source=path, line=position)
            continue
        yield position, value


def _records_by_line(
    path: Path, lines: Iterable[str], decode: Callable[[str], Any], *, kind: str
) -> Iterator[tuple[int, dict[str, Any] | Problem]]:
    """``(line, record)`` per non-blank line, or ``(line, Problem)`` for a line that ``decode`` refuses
    (its ValueError says why) or that does not hold ``kind``: the line reader of both formats."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = decode(line)
        except ValueError as exc:
            yield number, Problem(str(exc), source=path, line=number)
            continue
        if not isinstance(value, dict):
            yield number, Problem(f"a record must be {kind}", source=path, line=number)
            continue
        yield number, value


def _json_line(line: str) -> Any:
    if (bad := _undecodable(line)) is not None:
        raise ValueError(f"not valid UTF-8 at column {bad + 1}")
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON: {exc.msg} at column {exc.colno}") from None


def _python_literal(line: str) -> Any:
    try:
        return ast.literal_eval(line.strip())
    except (ValueError, SyntaxError) as exc:
        raise ValueError(f"not a Python dict literal: {exc}") from None


def _undecodable(text: str) -> int | None:
    """The position of the first byte that was not UTF-8 (a lone surrogate after decoding), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _entity(raw: Any, role: str) -> Entity:
    if not isinstance(raw, dict):
        raise ValueError(f"{role} must be an object with name, pos and tags")
    missing = [key for key in ("name", "pos", "tags") if key not in raw]
    if missing:
        raise ValueError(f"{role} lacks {', '.join(missing)}")
    pos = raw["pos"]
    if not (isinstance(pos, list) and len(pos) == 2 and all(isinstance(p, int) for p in pos)):
        raise ValueError(f"{role} pos must be [start, end], got {pos!r}")
    return Entity(name=raw["name"], type=raw["tags"], span=(pos[0], pos[1]))


def post_from_record(raw: dict[str, Any], *, id: str | None = None) -> Post:
    """Build a Post from one KECPM record; raise ValueError saying what is wrong."""
    for key in ("token", "img_id", "label_list"):
        if key not in raw:
            raise ValueError(f"missing field {key!r}")
    quintuples = []
    for number, group in enumerate(raw["label_list"], start=1):
        items = group if isinstance(group, list) else [group]
        for item in items:
            if not isinstance(item, dict) or "relation" not in item:
                raise ValueError(f"label {number} must be an object with beg_ent, sec_ent and relation")
            try:
                quintuples.append(
                    Quintuple(
                        head=_entity(item.get("beg_ent"), "beg_ent"),
                        tail=_entity(item.get("sec_ent"), "sec_ent"),
                        relation=item["relation"],
                    )
                )
            except ValidationError as exc:
                raise ValueError(f"label {number}: {describe_validation_error(exc)}") from None
            except ValueError as exc:
                raise ValueError(f"label {number}: {exc}") from None
    try:
        return Post(
            id=id or raw["img_id"],
            tokens=raw["token"],
            img_id=raw["img_id"],
            image_descriptions=raw.get("image_caption") or [],
            knowledge=raw.get("knowledge") or [],
            quintuples=quintuples,
        )
    except ValidationError as exc:
        raise ValueError(describe_validation_error(exc)) from None


def _parse_kecpm(path: str | Path) -> tuple[list[tuple[int, Post]], list[Problem]]:
    """``(line, Post)`` of every valid record and the Problem of every other, in one pass."""
    posts: list[tuple[int, Post]] = []
    problems: list[Problem] = []
    seen: Counter[str] = Counter()
    explicit: dict[str, int] = {}
    records_seen: dict[str, int] = {}
    for line, raw in read_kecpm_records(path):
        if isinstance(raw, Problem):
            problems.append(raw)
            continue
        img_id = raw.get("img_id")
        record_id = None
        if isinstance(raw.get("id"), str) and raw["id"]:
            # An explicit id (a user's own file) must be unique.
            record_id = raw["id"]
            if record_id in explicit:
                message = f"duplicate id (first at line {explicit[record_id]})"
                problems.append(Problem(message, source=path, line=line, record=record_id))
                continue
            explicit[record_id] = line
        elif isinstance(img_id, str) and img_id:
            seen[img_id] += 1
            record_id = img_id if seen[img_id] == 1 else f"{img_id}#{seen[img_id]}"
        fingerprint = json.dumps([raw.get("token"), img_id, raw.get("label_list")], sort_keys=True)
        if fingerprint in records_seen:
            message = f"duplicate record (same tokens, image and labels as line {records_seen[fingerprint]})"
            problems.append(Problem(message, source=path, line=line, record=record_id))
            continue
        records_seen[fingerprint] = line
        try:
            posts.append((line, post_from_record(raw, id=record_id)))
        except ValueError as exc:
            problems.append(Problem(str(exc), source=path, line=line, record=record_id))
    return posts, problems


def parse_kecpm(path: str | Path) -> tuple[list[Post], list[Problem]]:
    """The valid Posts of one KECPM file and every problem of the others, in one pass (no sibling files).

    >>> posts, problems = parse_kecpm("mine/val.jsonl")  # doctest: +SKIP
    """
    posts, problems = _parse_kecpm(path)
    return [post for _, post in posts], problems


def validate_kecpm(path: str | Path) -> list[Problem]:
    """Every problem in one KECPM file (empty when it is valid); does not stop at the first."""
    return _parse_kecpm(path)[1]


def read_kecpm(path: str | Path, *, lenient: bool = False) -> list[Post]:
    """Read one KECPM file (array or JSON Lines, no sibling files) into validated Posts.

    Raises DataError listing every bad record, unless ``lenient``, which skips them (the caller can
    still find them with :func:`validate_kecpm`).

    >>> posts = read_kecpm("few_shot/seed_17/val_ofa_knowledge.json")  # doctest: +SKIP
    >>> posts[0].knowledge[0]  # doctest: +SKIP
    """
    posts, problems = parse_kecpm(path)
    if problems and not lenient:
        raise DataError(problems)
    return posts


# -- MNRE v2 ----------------------------------------------------------------------------------------
def parse_mnre_label(label: str) -> tuple[str, str, str] | None:
    """``'/per/org/member_of'`` -> ``('per', 'org', 'member_of')``; ``'None'`` -> None."""
    if label == "None":
        return None
    parts = label.strip("/").split("/")
    if len(parts) != 3:
        raise ValueError(f"relation label {label!r} is not /<head type>/<tail type>/<relation>")
    return parts[0], parts[1], parts[2]


def read_mnre_pairs(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | Problem]]:
    """Yield ``(line, raw pair)`` for each line, or ``(line, Problem)`` where it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    yield from _records_by_line(
        path, path.read_text(encoding="utf-8").splitlines(), _python_literal, kind="a dict literal"
    )


def _mnre_quintuple(raw: dict[str, Any]) -> Quintuple | None:
    for key in ("token", "h", "t", "img_id", "relation"):
        if key not in raw:
            raise ValueError(f"missing field {key!r}")
    label = parse_mnre_label(raw["relation"])
    if label is None:
        return None
    head_type, tail_type, relation = label
    return Quintuple(
        head=Entity(name=raw["h"]["name"], type=head_type, span=tuple(raw["h"]["pos"])),
        tail=Entity(name=raw["t"]["name"], type=tail_type, span=tuple(raw["t"]["pos"])),
        relation=relation,
    )


def _parse_mnre(path: str | Path) -> tuple[list[Post], list[Problem]]:
    groups: dict[tuple[tuple[str, ...], str], list[Quintuple]] = {}
    problems: list[Problem] = []
    for line, raw in read_mnre_pairs(path):
        if isinstance(raw, Problem):
            problems.append(raw)
            continue
        try:
            quintuple = _mnre_quintuple(raw)
        except ValidationError as exc:
            problems.append(Problem(describe_validation_error(exc), source=path, line=line, record=raw.get("img_id")))
            continue
        except (ValueError, TypeError, KeyError) as exc:
            problems.append(Problem(f"malformed pair: {exc}", source=path, line=line, record=raw.get("img_id")))
            continue
        if quintuple is not None:
            groups.setdefault((tuple(raw["token"]), raw["img_id"]), []).append(quintuple)
    posts: list[Post] = []
    seen: Counter[str] = Counter()
    for (tokens, img_id), quintuples in groups.items():
        seen[img_id] += 1
        record_id = img_id if seen[img_id] == 1 else f"{img_id}#{seen[img_id]}"
        try:
            posts.append(Post(id=record_id, tokens=list(tokens), img_id=img_id, quintuples=quintuples))
        except ValidationError as exc:
            problems.append(Problem(describe_validation_error(exc), source=path, record=record_id))
    return posts, problems


def read_mnre(path: str | Path, *, lenient: bool = False) -> list[Post]:
    """The JMERE posts of an MNRE v2 txt file: non-None pairs grouped by (tokens, image), in file order.

    Raises DataError listing every bad line, unless ``lenient``, which skips them.
    """
    posts, problems = _parse_mnre(path)
    if problems and not lenient:
        raise DataError(problems)
    return posts


def read_texts(path: str | Path, *, lenient: bool = False) -> list[list[str]]:
    """The distinct texts (as word lists, in file order) of an MNRE v2 ``.txt`` file, every sentence
    whatever its pairs (``None`` ones included: unlabelled text for the encoder), or of a KECPM file's
    posts; labels are not read. For task-adaptive pretraining (:mod:`kecpm.extractor.adaptation`).

    Raises DataError listing every bad line, unless ``lenient``, which skips them.
    """
    path = Path(path)
    if path.suffix != ".txt":
        return list({tuple(p.tokens): list(p.tokens) for p in read_post_file(path, lenient=lenient).posts}.values())
    texts: dict[tuple[str, ...], list[str]] = {}
    problems: list[Problem] = []
    for line, raw in read_mnre_pairs(path):
        words = None if isinstance(raw, Problem) else raw.get("token")
        if isinstance(raw, Problem):
            problems.append(raw)
        elif not isinstance(words, list) or not words or not all(isinstance(w, str) for w in words):
            problems.append(
                Problem("'token' is not a non-empty list of words", source=path, line=line, record=raw.get("img_id"))
            )
        else:
            texts.setdefault(tuple(words), words)
    if problems and not lenient:
        raise DataError(problems)
    return list(texts.values())


def unlabelled_posts(
    texts: Sequence[str | Path], *, exclude: Sequence[str | Path] = (), sample: int | None = None, seed: int = 0
) -> tuple[list[Post], int]:
    """The distinct texts of ``texts`` (see :func:`read_texts`; labels unread) that no ``exclude`` file
    holds, as unlabelled Posts in file order, and how many were left out for being there. With ``sample``,
    a seeded sample of that many, which depends on the texts and ``seed``, not on their order in the files."""
    chosen = dict.fromkeys(tuple(words) for path in texts for words in read_texts(path))
    left_out = {tuple(words) for path in exclude for words in read_texts(path)} & chosen.keys()
    pool = [words for words in chosen if words not in left_out]
    if sample is not None:
        pool = random.Random(seed).sample(sorted(pool), min(sample, len(pool)))
    return [Post(id=f"unlabelled-{i}", tokens=list(words)) for i, words in enumerate(pool)], len(left_out)


# -- post files with their siblings, seed folders ---------------------------------------------------
class PostFile(BaseModel):
    """What :func:`read_post_file` read: the posts, the problems of the records it could not read and
    the warnings about sibling records that did not match (both only when lenient: strict reading
    raises them), and the sibling files it overlaid (field -> file)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    path: Path
    split: str = Field(description="the split the file's name says: 'val' for val.json")
    posts: list[Post]
    problems: list[Problem] = Field(default_factory=list)
    warnings: list[Problem] = Field(default_factory=list)
    siblings: dict[str, Path] = Field(default_factory=dict)


def split_name(path: str | Path) -> str:
    """The split a post file's name says: ``val`` for ``val.json``, ``val.jsonl``,
    ``val_ofa_image_caption.json`` and ``val_ofa_knowledge.json``.

    >>> split_name("seed_17/train_ofa_knowledge.json")
    'train'
    """
    name = Path(path).name
    for suffix in (KNOWLEDGE_SUFFIX, CAPTIONS_SUFFIX, ".json", ".jsonl", ".txt"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def read_post_file(
    path: str | Path,
    *,
    split: str | None = None,
    captions: bool = True,
    knowledge: bool = True,
    knowledge_file: str | Path | None = None,
    lenient: bool = False,
) -> PostFile:
    """Posts from a file or a seed folder, with what the files beside them add.

    ``path`` is a KECPM file, an MNRE v2 ``.txt`` file, or a KECPM seed folder (then ``split`` names
    the file: ``train`` reads ``train.json``). A post file ``X.json`` or ``X.jsonl`` takes the image
    descriptions of ``X_ofa_image_caption.json`` (``captions``) and the knowledge of
    ``X_ofa_knowledge.json`` (``knowledge``) when they exist; ``knowledge=False`` leaves every post
    without knowledge, and ``knowledge_file`` (a KECPM file, e.g. the knowledge agent's export)
    replaces each post's knowledge. Sibling records are matched by id and must hold the same post.

    Strict (default): DataError listing every problem of the file and its siblings. ``lenient``: the
    posts that could be read and the problems of the others; a post whose sibling record is missing or
    differs keeps what its own file says (logged, and listed in ``warnings``).

    >>> read_post_file("seed_17", split="val").posts[0].image_descriptions  # doctest: +SKIP
    """
    path = Path(path)
    if path.is_dir():
        path = path / f"{split or 'train'}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    name = split_name(path)
    if path.suffix == ".txt":
        posts, problems = _parse_mnre(path)
        lines: list[int | None] = [None] * len(posts)
    else:
        parsed, problems = _parse_kecpm(path)
        lines = [line for line, _ in parsed]
        posts = [post for _, post in parsed]
    wanted = {CAPTIONS_SUFFIX: captions, KNOWLEDGE_SUFFIX: knowledge}
    overlays: list[tuple[str, Path]] = []
    if path.name in (f"{name}.json", f"{name}.jsonl"):
        for suffix, fieldname in _SIBLING_FIELDS.items():
            sibling = path.parent / f"{name}{suffix}"
            if wanted[suffix] and sibling.is_file():
                overlays.append((fieldname, sibling))
    if not knowledge:
        posts = [p.model_copy(update={"knowledge": []}) if p.knowledge else p for p in posts]
    if knowledge_file is not None:
        overlays.append(("knowledge", Path(knowledge_file)))
    warnings: list[Problem] = []
    for fieldname, sibling in overlays:
        posts, found = _overlay(posts, lines, sibling, field=fieldname, base=path.name, strict=not lenient)
        (warnings if lenient else problems).extend(found)
    if problems and not lenient:
        raise DataError(problems)
    return PostFile(path=path, split=name, posts=posts, problems=problems, warnings=warnings, siblings=dict(overlays))


def read_posts(path: str | Path, *, lenient: bool = False) -> list[Post]:
    """Labelled posts from a KECPM file (with its sibling caption and knowledge files) or an MNRE v2
    txt file; see :func:`read_post_file`."""
    return read_post_file(path, lenient=lenient).posts


def validate_posts(path: str | Path) -> list[Problem]:
    """Every problem in one KECPM or MNRE v2 file (its siblings are not read)."""
    return _parse_mnre(path)[1] if Path(path).suffix == ".txt" else validate_kecpm(path)


def load_split(seed_dir: str | Path, split: str, *, captions: bool = True, knowledge: bool = True) -> list[Post]:
    """One split of a KECPM seed folder, with its OFA captions and ChatGPT knowledge when present.

    Reads ``{split}.json``, then overlays ``{split}_ofa_image_caption.json`` and
    ``{split}_ofa_knowledge.json`` record by record; either may be absent.
    """
    return read_post_file(seed_dir, split=split, captions=captions, knowledge=knowledge).posts


def overlay(posts: Sequence[Post], path: str | Path, *, field: str, base: str = "the posts") -> list[Post]:
    """``posts`` with ``field`` (``knowledge`` or ``image_descriptions``) taken from the KECPM file ``path``,
    record by record; DataError when the file does not hold the same posts."""
    merged, problems = _overlay(posts, [None] * len(posts), Path(path), field=field, base=base, strict=True)
    if problems:
        raise DataError(problems)
    return merged


def _overlay(
    posts: Sequence[Post], lines: Sequence[int | None], path: Path, *, field: str, base: str, strict: bool
) -> tuple[list[Post], list[Problem]]:
    """Take ``field`` from the records of ``path`` with the posts' ids. Returns the posts and the problems:
    strict, every problem of ``path`` and every post it does not match; lenient, only the latter (a
    bad record of ``path`` is the bad record of the posts' own file that was already reported)."""
    parsed, problems = _parse_kecpm(path)
    if not strict:
        problems = []
    elif not problems and len(parsed) != len(posts):
        problems.append(Problem(f"{len(parsed)} records, but {base} has {len(posts)}", source=path))
    by_id = {post.id: (line, post) for line, post in parsed}
    merged: list[Post] = []
    for position, (post, line) in enumerate(zip(posts, lines, strict=True), start=1):
        found = by_id.get(post.id)
        if found is not None and found[1].tokens == post.tokens and found[1].img_id == post.img_id:
            merged.append(post.model_copy(update={field: getattr(found[1], field)}))
            continue
        merged.append(post)
        where = f"{base}'s record {line or position}"
        if found is None:
            problem = Problem(f"no record matches {where}", source=path, record=post.id)
        else:
            problem = Problem(f"record differs from {where}", source=path, line=found[0], record=post.id)
        if not strict:
            log.warning("%s; the post is read without it", problem)
        problems.append(problem)
    return merged, problems


# -- writing ----------------------------------------------------------------------------------------
def _entity_record(entity: Entity) -> dict[str, Any]:
    if entity.span is None:
        raise ValueError(f"entity {entity.name!r} has no span; the KECPM format needs one")
    return {"name": entity.name, "pos": list(entity.span), "tags": entity.type.value}


def post_to_record(post: Post, *, caption: bool = False, knowledge: bool = False) -> dict[str, Any]:
    """The KECPM record of a Post, keys in the released order."""
    record: dict[str, Any] = {
        "token": list(post.tokens),
        "img_id": post.img_id if post.img_id is not None else post.id,
        "label_list": [
            [{"beg_ent": _entity_record(q.head), "sec_ent": _entity_record(q.tail), "relation": q.relation.value}]
            for q in post.quintuples
        ],
    }
    if caption:
        record["image_caption"] = list(post.image_descriptions)
    if knowledge:
        record["knowledge"] = list(post.knowledge)
    return record


def write_kecpm(
    posts: Iterable[Post],
    path: str | Path,
    *,
    caption: bool | None = None,
    knowledge: bool | None = None,
    json_lines: bool | None = None,
    newline: str = "\n",
) -> Path:
    """Write Posts in the KECPM format; the shape follows the file name unless told otherwise.

    ``*_ofa_knowledge.json`` -> JSON Lines with caption and knowledge; ``*_ofa_image_caption.json`` ->
    an array with caption; anything else -> a plain array. ``newline`` ends each JSON line (some
    released knowledge files use ``"\r\n"``).
    """
    path = Path(path)
    name = path.name
    is_knowledge = name.endswith("_knowledge.json") or name.endswith(".jsonl")
    caption = caption if caption is not None else (is_knowledge or name.endswith("_image_caption.json"))
    knowledge = knowledge if knowledge is not None else is_knowledge
    json_lines = json_lines if json_lines is not None else is_knowledge
    records = [post_to_record(p, caption=caption, knowledge=knowledge) for p in posts]
    path.parent.mkdir(parents=True, exist_ok=True)
    if json_lines:
        text = "".join(json.dumps(r, ensure_ascii=False) + newline for r in records)
    else:
        text = json.dumps(records, ensure_ascii=False)
    path.write_text(text, encoding="utf-8")
    return path
