#!/usr/bin/env bash
# The GPU run (checks, then every GPU benchmark) in one command within a time budget; see _gpu_run.py.
#   bash benchmarks/gpu.sh                        # all steps within 540 s; logs and new RESULTS rows in $OUT or benchmarks/gpu_out
#   bash benchmarks/gpu.sh --only sdxl,world      # a rerun of what failed or ran out of time
#   bash benchmarks/gpu.sh --list                 # the steps; runs nothing
# Python: $PYTHON, else the repo's .venv, else python3 (a GPU machine's own torch). Wheels in .whl/
# (docs/gpu.md: packages that machine lacks) are installed to a temporary folder first.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${PYTHON:-}" ]; then py="$PYTHON"
elif [ -x "$root/.venv/bin/python" ]; then py="$root/.venv/bin/python"
else py=python3
fi
if compgen -G "$root/.whl/*.whl" >/dev/null; then
    site="${TMPDIR:-/tmp}/unlearn_guard_wheels"
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$root"/.whl/*.whl \
        || { echo "gpu.sh: could not install the wheels in $root/.whl" >&2; exit 2; }
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" "$root/benchmarks/_gpu_run.py" "$@"
