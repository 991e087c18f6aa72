#!/usr/bin/env bash
# Creates .venv and installs unlearn_guard with its test extras. Idempotent: re-runs only when
# pyproject.toml changed. torch is installed first and pinned to 2.13.0 so that pip takes the
# CPU build on this machine's disk instead of pulling a multi-GB CUDA build. Installs nothing
# outside .venv: the browser only the tests need comes from scripts/test_setup.sh (test.sh runs it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.unlearn_guard_installed"
log="$venv/install.log"
want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setting up $venv (log: $log)"
python3 -m venv "$venv"
install() {
  if ! "$venv/bin/python" -m pip install "$@" >>"$log" 2>&1; then
    echo "pip install $* failed; last lines of $log:" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
}
install --upgrade pip
install "torch==2.13.0"
install -e "$root[test]"
"$venv/bin/python" -c "import torch, diffusers, unlearn_guard.kernels" >/dev/null 2>&1
echo "$want" > "$stamp"
