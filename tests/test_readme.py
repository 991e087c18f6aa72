"""The README's quick-start example runs as written (in a subprocess, in a temporary folder)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

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
