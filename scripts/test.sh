#!/usr/bin/env bash
# The whole test suite: set up (.venv, then scripts/test_setup.sh for the HTML test's browser),
# prove the real install (scripts/check_wheel.sh: the built wheel, installed non-editable into a
# fresh venv outside the checkout, imports every module and gates the shipped world) beside pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/env.sh"
bash "$root/scripts/test_setup.sh"
# The wheel check (about a minute, mostly pip, on one core) runs beside the suite; its output is held
# back and printed when both are done, and either failing fails the run.
wheel_log="$(mktemp -t unlearn_guard_check_wheel.XXXXXX)"
bash "$root/scripts/check_wheel.sh" >"$wheel_log" 2>&1 &
wheel_pid=$!
trap 'kill "$wheel_pid" 2>/dev/null || true; rm -f "$wheel_log"' EXIT
cd "$root"
# One pytest-xdist worker per core, a test file per worker at a time (its fixtures built once), each
# worker at 1 thread (tests/conftest.py). The golden parity test needs 2 threads beside the other
# worker: OpenMP threads that sleep while they wait (PASSIVE) instead of spinning keep that cheap.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
set +e
"$root/.venv/bin/pytest" -q -n auto --dist loadfile "$@"
tests=$?
wait "$wheel_pid"
wheel=$?
set -e
cat "$wheel_log"
if [ "$wheel" != 0 ]; then
  echo "scripts/test.sh: the wheel check failed (exit $wheel); its output is above" >&2
  exit 1
fi
exit "$tests"
