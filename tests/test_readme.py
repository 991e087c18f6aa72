"""The README's runnable examples run as written (in a subprocess, in a temporary folder)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_api_example_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    # The quick-start example: the block that builds the tiny model, probes and writes probe.json.
    examples = [b for b in blocks if "build_tiny_components" in b and 'to_json("probe.json")' in b]
    assert len(examples) == 1, "the README must keep exactly one runnable quick-start example"
    example = examples[0]
    done = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "d_N (mofc)" in done.stdout
    written = json.loads((tmp_path / "probe.json").read_text())
    assert written["memory_distance"]["n_erased"] == 4 and written["config"]["preset"] == "fast"


def test_readme_callback_example_runs_as_printed_and_stops_early(tmp_path):
    """The probe-callback example: ESD on the shipped world model, stopped by the monitor; its
    printed output is the block that follows it in the README (M and d_N to within 0.01: CPU
    kernels may round the last digit differently)."""
    text = README.read_text()
    found = re.findall(r"```python\n((?:(?!```).)*)```\n```\n((?:(?!```).)*)```", text, flags=re.S)
    examples = [(code, out) for code, out in found if "esd_lora_erase" in code and "monitor.step(i + 1)" in code]
    assert len(examples) == 1, "the README must keep exactly one runnable ESD + monitor example"
    code, printed = examples[0]
    # One thread, as the README's timing: on a busy 2-core machine a second OpenMP thread made
    # this run 10x slower (502 s against 52 s, measured beside other jobs).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    got, expected = done.stdout.strip().splitlines(), printed.strip().splitlines()
    assert got[0] == expected[0] and got[0].startswith("ran ") and " of 200 iterations; stopped by patience" in got[0]
    assert int(got[0].split()[1]) < 200  # it stopped early
    pattern = re.compile(r"step (\d+): M = ([\d.]+) \[([\d.]+), ([\d.]+)\], d_N = ([\d.]+)")
    got_rows = [pattern.fullmatch(line).groups() for line in got[1:]]
    expected_rows = [pattern.fullmatch(line).groups() for line in expected[1:]]
    assert [row[0] for row in got_rows] == [row[0] for row in expected_rows]
    for row, want in zip(got_rows, expected_rows):
        assert [float(v) for v in row[1:]] == pytest.approx([float(v) for v in want[1:]], abs=0.01)
