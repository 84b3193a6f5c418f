"""Read MNRE v2 ``mnre_txt`` files and rebuild JMERE from them.

Each line is a Python dict literal (read with ``ast.literal_eval``) for one entity pair:
``{'token', 'h': {'name', 'pos'}, 't': {...}, 'img_id', 'relation': '/per/org/member_of'}``.
JMERE keeps the pairs whose relation is not ``None``, groups them by sentence (tokens and image),
takes the entity types from the label, and merges ``per/per/alternate_names`` and
``org/org/alternate_names`` into one ``alternate_names`` (21 relations).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import DataError, Problem, describe_validation_error
from .records import Entity, Post, Quintuple

__all__ = ["parse_mnre_label", "read_mnre", "read_mnre_pairs"]


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
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = ast.literal_eval(line.strip())
            except (ValueError, SyntaxError) as exc:
                yield number, Problem(f"not a Python dict literal: {exc}", source=path, line=number)
                continue
            if not isinstance(value, dict):
                yield number, Problem("a line must be a dict literal", source=path, line=number)
                continue
            yield number, value


def _quintuple(raw: dict[str, Any]) -> Quintuple | None:
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


def read_mnre(path: str | Path, *, lenient: bool = False) -> list[Post]:
    """The JMERE posts of an MNRE v2 txt file: non-None pairs grouped by (tokens, image), in file order.

    Raises DataError listing every bad line, unless ``lenient``, which skips them.
    """
    groups: dict[tuple[tuple[str, ...], str], list[Quintuple]] = {}
    problems: list[Problem] = []
    for line, raw in read_mnre_pairs(path):
        if isinstance(raw, Problem):
            problems.append(raw)
            continue
        try:
            quintuple = _quintuple(raw)
        except ValidationError as exc:
            problems.append(Problem(describe_validation_error(exc), source=path, line=line, record=raw.get("img_id")))
        except (ValueError, TypeError, KeyError) as exc:
            problems.append(Problem(f"malformed pair: {exc}", source=path, line=line, record=raw.get("img_id")))
            continue
        if quintuple is not None:
            groups.setdefault((tuple(raw["token"]), raw["img_id"]), []).append(quintuple)
    if problems and not lenient:
        raise DataError(problems)
    posts: list[Post] = []
    seen: dict[str, int] = {}
    for (tokens, img_id), quintuples in groups.items():
        seen[img_id] = seen.get(img_id, 0) + 1
        record_id = img_id if seen[img_id] == 1 else f"{img_id}#{seen[img_id]}"
        try:
            posts.append(Post(id=record_id, tokens=list(tokens), img_id=img_id, quintuples=quintuples))
        except ValidationError as exc:
            problems.append(Problem(describe_validation_error(exc), source=path, record=record_id))
    if problems and not lenient:
        raise DataError(problems)
    return posts
