import importlib
import re
import subprocess
import sys
from pathlib import Path

import kecpm

PACKAGES = ("retrieval", "extractor", "prompts", "eval", "llm", "agents", "pipeline", "experiments", "testing", "cli")


def test_subpackages_import_from_any_directory_without_heavy_libraries(tmp_path):
    code = (
        f"import sys, kecpm, {', '.join('kecpm.' + p for p in PACKAGES)};"
        "heavy = ('torch', 'transformers', 'chromadb', 'llama_cpp', 'langchain_chroma');"
        "heavy = [m for m in heavy if m in sys.modules];"
        "print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_readme_lists_the_public_api_of_every_package():
    readme = (Path(kecpm.__file__).parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Public API", 1)[1].split("\n### ", 1)[0]
    listed = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            package, names = line.strip("|").split("|", 1)
            listed[package.strip(" `")] = set(re.findall(r"`([^`]+)`", names))
    assert {f"kecpm.{p}" for p in PACKAGES} <= set(listed)
    for name, names in listed.items():
        exported = set(importlib.import_module(name).__all__)
        if name == "kecpm.extractor":
            assert names <= exported, names - exported  # its own section lists the rest
        else:
            assert names == exported, (name, names ^ exported)
