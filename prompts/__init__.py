"""Prompt templates as files, found by name and version.

A template is one TOML file named ``<name>.v<version>.toml``::

    name = "generate"
    version = 1
    description = "..."
    [[messages]]
    role = "system"      # system | human | ai
    content = "... {text} ..."

Placeholders are ``{variable}`` (LangChain f-string syntax; write ``{{`` for a literal brace).
Templates are looked up in the directories a caller names, then in ``$KECPM_PROMPTS_DIR``
(several joined by ``os.pathsep``), then in the templates shipped with kecpm; the first directory
that holds a name and version wins, so dropping a file into your own directory overrides or adds
a template without touching code. Without a version, the highest one found is used.
"""

from __future__ import annotations

import os
import re
import string
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import KecpmError

if TYPE_CHECKING:
    from langchain_core.prompts import ChatPromptTemplate

__all__ = [
    "BUILTIN_DIR",
    "PROMPTS_ENV",
    "PromptMessage",
    "PromptTemplateFile",
    "TemplateNotFound",
    "list_templates",
    "load_template",
    "template_dirs",
]

BUILTIN_DIR = Path(__file__).resolve().parent / "templates"
PROMPTS_ENV = "KECPM_PROMPTS_DIR"
_FILE_NAME = re.compile(r"^(?P<name>[A-Za-z0-9_\-]+)\.v(?P<version>\d+)\.toml$")


class TemplateNotFound(KecpmError, LookupError):
    """No template file of that name (and version) in any search directory."""


class PromptMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Literal["system", "human", "ai"]
    content: str


class PromptTemplateFile(BaseModel):
    """One versioned template, as declared in its file."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: int = Field(ge=1)
    description: str = ""
    messages: tuple[PromptMessage, ...] = Field(min_length=1)
    path: Path | None = None

    @property
    def ref(self) -> str:
        """``name@vN``: how manifests and caches name this template."""
        return f"{self.name}@v{self.version}"

    @property
    def input_variables(self) -> list[str]:
        names: dict[str, None] = {}
        for message in self.messages:
            for _, field, _, _ in string.Formatter().parse(message.content):
                if field:
                    names.setdefault(field.split(".")[0].split("[")[0])
        return list(names)

    def format_messages(self, **values: Any) -> list[tuple[str, str]]:
        """``(role, text)`` pairs with the placeholders filled; a missing variable is a KeyError naming it."""
        missing = [v for v in self.input_variables if v not in values]
        if missing:
            raise KeyError(f"template {self.ref} needs {', '.join(missing)}")
        return [(m.role, m.content.format(**values)) for m in self.messages]

    def format_text(self, **values: Any) -> str:
        """All messages' text joined by blank lines, for templates that feed a model plain text."""
        return "\n\n".join(text for _, text in self.format_messages(**values))

    def chat_prompt(self) -> ChatPromptTemplate:
        """The LangChain ``ChatPromptTemplate`` of this file."""
        from langchain_core.prompts import ChatPromptTemplate

        return ChatPromptTemplate.from_messages([(m.role, m.content) for m in self.messages])


def template_dirs(extra: Iterable[str | Path] | None = None) -> list[Path]:
    """The search order: ``extra``, then ``$KECPM_PROMPTS_DIR``, then the shipped templates."""
    dirs = [Path(d) for d in extra or ()]
    dirs += [Path(d) for d in os.environ.get(PROMPTS_ENV, "").split(os.pathsep) if d]
    dirs.append(BUILTIN_DIR)
    return dirs


def _read(path: Path) -> PromptTemplateFile:
    match = _FILE_NAME.match(path.name)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        template = PromptTemplateFile.model_validate({**data, "path": path})
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise KecpmError(f"{path}: not a valid prompt template: {exc}") from None
    if match and (template.name != match["name"] or template.version != int(match["version"])):
        raise KecpmError(
            f"{path}: the file declares {template.ref} but its name says {match['name']}@v{match['version']}"
        )
    return template


def list_templates(search_dirs: Sequence[str | Path] | None = None) -> list[PromptTemplateFile]:
    """Every template visible from the search directories (an overridden one listed once)."""
    found: dict[tuple[str, int], PromptTemplateFile] = {}
    for directory in template_dirs(search_dirs):
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.v*.toml")):
            match = _FILE_NAME.match(path.name)
            if match and (match["name"], int(match["version"])) not in found:
                found[(match["name"], int(match["version"]))] = _read(path)
    return sorted(found.values(), key=lambda t: (t.name, t.version))


def load_template(
    name: str, version: int | None = None, *, search_dirs: Sequence[str | Path] | None = None
) -> PromptTemplateFile:
    """The template ``name`` at ``version`` (the highest when None); also accepts ``"name@v2"``."""
    if "@v" in name and version is None:
        name, _, number = name.partition("@v")
        version = int(number)
    for directory in template_dirs(search_dirs):
        if not directory.is_dir():
            continue
        if version is not None:
            path = directory / f"{name}.v{version}.toml"
            if path.is_file():
                return _read(path)
            continue
        versions = [
            int(m["version"])
            for p in directory.glob(f"{name}.v*.toml")
            if (m := _FILE_NAME.match(p.name)) and m["name"] == name
        ]
        if versions:
            return _read(directory / f"{name}.v{max(versions)}.toml")
    wanted = name if version is None else f"{name}@v{version}"
    searched = ", ".join(str(d) for d in template_dirs(search_dirs))
    raise TemplateNotFound(f"no prompt template {wanted} in {searched}")
