"""Read and write the KECPM few-shot files (the JMERE format).

Three shapes share one record layout ``{"token", "img_id", "label_list"}``:

- ``train.json`` / ``val.json``: a JSON array;
- ``*_ofa_image_caption.json``: a JSON array whose records add ``"image_caption": [str]``;
- ``*_ofa_knowledge.json``: JSON Lines whose records add caption and ``"knowledge": [str]``.

``label_list`` is a list of one-element lists, each holding
``{"beg_ent": {"name", "pos": [start, end), "tags"}, "sec_ent": {...}, "relation"}``.

Records get ids from their image: ``img_id``, and ``img_id#2``, ``img_id#3``... for later records
of the same image (the released splits repeat a sentence when it has several quintuples).
Writers reproduce the released files byte for byte: ``json.dumps`` with non-ASCII characters kept,
an array in one line, or JSON Lines.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import DataError, Problem, describe_validation_error
from .records import Entity, Post, Quintuple

__all__ = [
    "load_split",
    "overlay",
    "parse_kecpm",
    "post_from_record",
    "post_to_record",
    "read_kecpm",
    "read_kecpm_records",
    "read_posts",
    "validate_kecpm",
    "write_kecpm",
]


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
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            if (bad := _undecodable(line)) is not None:
                yield number, Problem(f"not valid UTF-8 at column {bad + 1}", source=path, line=number)
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                yield (
                    number,
                    Problem(f"malformed JSON: {exc.msg} at column {exc.colno}", source=path, line=number),
                )
                continue
            if not isinstance(value, dict):
                yield number, Problem("a record must be a JSON object", source=path, line=number)
                continue
            yield number, value
        return
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        yield (
            exc.lineno,
            Problem(
                f"malformed JSON array: {exc.msg} at line {exc.lineno} column {exc.colno}",
                source=path,
                line=exc.lineno,
            ),
        )
        return
    for position, value in enumerate(values, start=1):
        if not isinstance(value, dict):
            yield position, Problem("a record must be a JSON object", source=path, line=position)
            continue
        if _undecodable(json.dumps(value, ensure_ascii=False)) is not None:
            yield position, Problem("not valid UTF-8", source=path, line=position)
            continue
        yield position, value


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


def _parse(path: str | Path) -> tuple[list[Post], list[Problem]]:
    posts: list[Post] = []
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
                problems.append(
                    Problem(
                        f"duplicate id (first at line {explicit[record_id]})", source=path, line=line, record=record_id
                    )
                )
                continue
            explicit[record_id] = line
        elif isinstance(img_id, str) and img_id:
            seen[img_id] += 1
            record_id = img_id if seen[img_id] == 1 else f"{img_id}#{seen[img_id]}"
        fingerprint = json.dumps([raw.get("token"), img_id, raw.get("label_list")], sort_keys=True)
        if fingerprint in records_seen:
            problems.append(
                Problem(
                    f"duplicate record (same tokens, image and labels as line {records_seen[fingerprint]})",
                    source=path,
                    line=line,
                    record=record_id,
                )
            )
            continue
        records_seen[fingerprint] = line
        try:
            posts.append(post_from_record(raw, id=record_id))
        except ValueError as exc:
            problems.append(Problem(str(exc), source=path, line=line, record=record_id))
    return posts, problems


def parse_kecpm(path: str | Path) -> tuple[list[Post], list[Problem]]:
    """The valid Posts of a KECPM file and every problem of the others, in one pass.

    For tools that process what they can and report the rest (each Problem names its line and record).

    >>> posts, problems = parse_kecpm("mine/val.jsonl")  # doctest: +SKIP
    """
    return _parse(path)


def validate_kecpm(path: str | Path) -> list[Problem]:
    """Every problem in a KECPM file (empty when it is valid); does not stop at the first."""
    return _parse(path)[1]


def read_kecpm(path: str | Path, *, lenient: bool = False) -> list[Post]:
    """Read a KECPM file (array or JSON Lines) into validated Posts.

    Raises DataError listing every bad record, unless ``lenient``, which skips them (the caller can
    still find them with :func:`validate_kecpm`).

    >>> posts = read_kecpm("few_shot/seed_17/val_ofa_knowledge.json")  # doctest: +SKIP
    >>> posts[0].knowledge[0]  # doctest: +SKIP
    """
    posts, problems = _parse(path)
    if problems and not lenient:
        raise DataError(problems)
    return posts


def read_posts(path: str | Path, *, lenient: bool = False) -> list[Post]:
    """Read labelled posts from a KECPM file, or from an MNRE v2 txt file (rebuilt into JMERE posts)."""
    if Path(path).suffix == ".txt":
        from .mnre import read_mnre

        return read_mnre(path, lenient=lenient)
    return read_kecpm(path, lenient=lenient)


def load_split(seed_dir: str | Path, split: str, *, captions: bool = True, knowledge: bool = True) -> list[Post]:
    """One split of a KECPM seed folder, with its OFA captions and ChatGPT knowledge when present.

    Reads ``{split}.json``, then overlays ``{split}_ofa_image_caption.json`` and
    ``{split}_ofa_knowledge.json`` record by record, checking that they hold the same posts.
    """
    seed_dir = Path(seed_dir)
    posts = read_kecpm(seed_dir / f"{split}.json")
    overlays = []
    if captions and (seed_dir / f"{split}_ofa_image_caption.json").exists():
        overlays.append(("image_descriptions", seed_dir / f"{split}_ofa_image_caption.json"))
    if knowledge and (seed_dir / f"{split}_ofa_knowledge.json").exists():
        overlays.append(("knowledge", seed_dir / f"{split}_ofa_knowledge.json"))
    for field, path in overlays:
        posts = overlay(posts, path, field=field, base=f"{split}.json")
    return posts


def overlay(posts: Sequence[Post], path: str | Path, *, field: str, base: str = "the posts") -> list[Post]:
    """``posts`` with ``field`` (``knowledge`` or ``image_descriptions``) taken from the KECPM file ``path``,
    record by record; DataError when the file does not hold the same posts in the same order."""
    extra = read_kecpm(path)
    if len(extra) != len(posts):
        raise DataError(Problem(f"{len(extra)} records, but {base} has {len(posts)}", source=path))
    merged = []
    for position, (post, other) in enumerate(zip(posts, extra, strict=True), start=1):
        if other.tokens != post.tokens or other.img_id != post.img_id:
            raise DataError(
                Problem(f"record differs from {base}'s record {position}", source=path, line=position, record=post.id)
            )
        merged.append(post.model_copy(update={field: getattr(other, field)}))
    return merged


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
            [
                {
                    "beg_ent": _entity_record(q.head),
                    "sec_ent": _entity_record(q.tail),
                    "relation": q.relation.value,
                }
            ]
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
