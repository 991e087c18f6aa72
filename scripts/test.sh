#!/usr/bin/env bash
# The whole test suite: set up, then pytest. Run through .venv/bin/pytest (not `python -m pytest`,
# which would put the repo root on sys.path and expose our kernels/ folder as a top-level module).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/env.sh"
cd "$root"
exec "$root/.venv/bin/pytest" -q "$@"
