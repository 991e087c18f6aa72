"""The other half of the benchmark scripts (tests/test_benchmarks.py holds the cases and the runner): a
file of its own so that pytest-xdist runs it on the other worker, beside the first half."""

from __future__ import annotations

import pytest

from test_benchmarks import MORE, benchmark_runs, check_script_ran  # noqa: F401 - benchmark_runs: the fixture


@pytest.mark.parametrize("script", MORE)
def test_benchmark_runs(script, benchmark_runs):  # noqa: F811 - the fixture imported above
    check_script_ran(benchmark_runs[script])
