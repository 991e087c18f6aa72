#!/usr/bin/env bash
# Creates .venv and installs unlearn_guard with its test extras. Idempotent: re-runs only when
# pyproject.toml changed. torch is installed first and pinned to 2.13.0 so that pip takes the
# CPU build on this machine's disk instead of pulling a multi-GB CUDA build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.unlearn_guard_installed"
want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip 2>&1 | grep -v "is ignored" || true
"$venv/bin/python" -m pip install --quiet "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
"$venv/bin/python" -m pip install --quiet -e "$root[test]" 2>&1 | grep -v "is ignored" || true
"$venv/bin/python" -c "import torch, diffusers, unlearn_guard.kernels" >/dev/null
echo "$want" > "$stamp"
