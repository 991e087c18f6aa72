#!/usr/bin/env bash
# The whole test suite: set up (.venv, then scripts/test_setup.sh for the HTML test's browser), then
# pytest. Run through .venv/bin/pytest (not `python -m pytest`, which would put the repo root on
# sys.path and expose our kernels/ folder as a top-level module).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/env.sh"
bash "$root/scripts/test_setup.sh"
cd "$root"
exec "$root/.venv/bin/pytest" -q "$@"
