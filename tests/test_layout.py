"""The house: the import contracts hold (and a forbidden import breaks them), every root module is under
the root contract, and no folder holds more than a quarter of the package's lines."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import kecpm

PACKAGE = Path(kecpm.__file__).resolve().parent
# Folders of the repository that are not part of the package.
NOT_PACKAGE = {"tests", "benchmarks", "examples", "scripts", "build", "dist", "runs", ".venv", ".git"}


def _contracts() -> dict[str, dict]:
    config = tomllib.loads((PACKAGE / "pyproject.toml").read_text(encoding="utf-8"))
    return {c["id"]: c for c in config["tool"]["importlinter"]["contracts"]}


def _package_files() -> list[Path]:
    return [
        path
        for path in PACKAGE.rglob("*.py")
        if not NOT_PACKAGE & set(path.relative_to(PACKAGE).parts) and "__pycache__" not in path.parts
    ]


def test_every_root_module_is_under_the_root_contract() -> None:
    root_modules = {f"kecpm.{p.stem}" for p in PACKAGE.glob("*.py") if not p.stem.startswith("__")}
    assert set(_contracts()["root"]["source_modules"]) == root_modules


def test_the_wheel_lists_every_subpackage() -> None:
    # setuptools installs only the packages pyproject names: a new folder left out is missing from the wheel.
    config = tomllib.loads((PACKAGE / "pyproject.toml").read_text(encoding="utf-8"))
    folders = {
        "kecpm." + ".".join(init.parent.relative_to(PACKAGE).parts)
        for init in PACKAGE.rglob("__init__.py")
        if init.parent != PACKAGE and not NOT_PACKAGE & set(init.relative_to(PACKAGE).parts)
    }
    assert set(config["tool"]["setuptools"]["packages"]) == folders | {"kecpm"}


def test_no_folder_holds_more_than_a_quarter_of_the_package_lines() -> None:
    lines: dict[str, int] = {}
    for path in _package_files():
        folder = path.relative_to(PACKAGE).parts[0] if len(path.relative_to(PACKAGE).parts) > 1 else "(root)"
        lines[folder] = lines.get(folder, 0) + len(path.read_text(encoding="utf-8").splitlines())
    total = sum(lines.values())
    assert {"agents", "llm", "pipeline", "experiments", "testing", "retrieval", "extractor"} <= set(lines)
    assert max(lines.values()) <= 0.25 * total, {k: f"{v / total:.1%}" for k, v in sorted(lines.items())}


def _lint_imports(package_root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the package under ``package_root`` (a folder holding ``kecpm/``)."""
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(package_root)}
    return subprocess.run(
        [command, "--no-cache"], cwd=package_root / "kecpm", env=env, capture_output=True, text=True, timeout=120
    )


def test_the_import_contracts_hold_and_a_forbidden_import_breaks_them(tmp_path: Path) -> None:
    copy = tmp_path / "kecpm"
    for path in _package_files():
        target = copy / path.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    shutil.copyfile(PACKAGE / "pyproject.toml", copy / "pyproject.toml")

    kept = _lint_imports(tmp_path)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "0 broken" in kept.stdout

    # eval importing another stage breaks the layers (stages are independent of one another)
    metrics = copy / "eval" / "metrics.py"
    metrics.write_text("from ..retrieval import config as _forbidden  # noqa\n" + metrics.read_text(encoding="utf-8"))
    broken = _lint_imports(tmp_path)
    assert broken.returncode != 0
    assert "BROKEN" in broken.stdout and "kecpm.eval.metrics -> kecpm.retrieval" in broken.stdout
