#!/usr/bin/env bash
# The whole test suite: set up (.venv, then scripts/test_setup.sh for the HTML test's browser),
# prove the real install (scripts/check_wheel.sh: the built wheel, installed non-editable into a
# fresh venv outside the checkout, imports every module and gates the shipped world), then pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/env.sh"
bash "$root/scripts/test_setup.sh"
bash "$root/scripts/check_wheel.sh"
cd "$root"
# One pytest-xdist worker per core, a test file per worker at a time (its fixtures built once), each
# worker at 1 thread (tests/conftest.py). The golden parity test needs 2 threads beside the other
# worker: OpenMP threads that sleep while they wait (PASSIVE) instead of spinning keep that cheap.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
exec "$root/.venv/bin/pytest" -q -n auto --dist loadfile "$@"
