#!/usr/bin/env bash
# The main job on the embedded default: set up, then `unlearn-guard demo` (no flags, no downloads).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/env.sh"
cd "$root"
exec "$root/.venv/bin/unlearn-guard" demo "$@"
