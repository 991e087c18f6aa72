"""The set-up scripts: the main job installs nothing it does not use; the test set-up brings Chromium.

Each script runs from a copy of scripts/ in a scratch root whose .venv is already stamped as
installed (so env.sh has nothing to do), with a fake `apt-get` first on PATH that records its calls
and a Chromium path that does not exist: what would a fresh CI machine's run install?
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def scratch(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(REPO / "scripts", root / "scripts")
    # A stand-in for the wheel check (it builds and installs the real package: tested by running it in CI).
    (root / "scripts" / "check_wheel.sh").write_text("#!/bin/sh\necho ran check_wheel\n")
    shutil.copy(REPO / ".ci" / "run", tmp_path / "ci_run")
    pyproject = (REPO / "pyproject.toml").read_bytes()
    (root / "pyproject.toml").write_bytes(pyproject)
    venv_bin = root / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (root / ".venv" / ".unlearn_guard_installed").write_text(hashlib.sha256(pyproject).hexdigest() + "\n")
    for name in ("unlearn-guard", "pytest"):  # stand-ins for the installed console scripts
        (venv_bin / name).write_text(f"#!/bin/sh\necho ran {name} \"$@\"\n")
        (venv_bin / name).chmod(0o755)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    calls = tmp_path / "apt-get.calls"
    (fake_bin / "apt-get").write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    (fake_bin / "apt-get").chmod(0o755)
    (fake_bin / "id").write_text("#!/bin/sh\necho 0\n")  # root, as on a fresh CI machine
    (fake_bin / "id").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}",
           "UNLEARN_GUARD_CHROMIUM": str(tmp_path / "no" / "chromium")}
    return root, env, calls


def _run(script: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def test_the_main_job_installs_no_browser(scratch):
    root, env, calls = scratch
    done = _run(root / "scripts" / "demo.sh", env)
    assert "ran unlearn-guard demo" in done.stdout and "check_wheel" not in done.stdout
    assert not calls.exists(), f"demo.sh ran apt-get: {calls.read_text()}"
    assert "apt-get" not in (REPO / "scripts" / "env.sh").read_text()


def test_the_test_set_up_installs_chromium_when_missing(scratch):
    root, env, calls = scratch
    done = _run(root / "scripts" / "test.sh", env)
    # the wheel check runs beside the suite; its output is printed after the suite's
    assert done.stdout.splitlines()[-2:] == ["ran pytest -q -n auto --dist loadfile", "ran check_wheel"]
    assert calls.read_text().splitlines() == ["update", "install -y --no-install-recommends chromium"]
    calls.unlink()
    present = {**env, "UNLEARN_GUARD_CHROMIUM": shutil.which("sh")}  # an executable that exists: nothing to do
    _run(root / "scripts" / "test.sh", present)
    assert not calls.exists()


def test_ci_runs_exactly_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert [line for line in ci.splitlines() if line and not line.startswith(("#", "set ", "cd "))] == [
        "bash scripts/test.sh"]
    assert "bash scripts/test.sh" in (REPO / "README.md").read_text()


@pytest.mark.parametrize("wheel, suite, expected", [(0, 0, 0), (0, 5, 5), (3, 0, 1), (3, 5, 1)])
def test_either_the_wheel_check_or_the_suite_failing_fails_the_run(scratch, wheel, suite, expected):
    root, env, _ = scratch
    (root / "scripts" / "check_wheel.sh").write_text(f"#!/bin/sh\necho ran check_wheel\nexit {wheel}\n")
    (root / ".venv" / "bin" / "pytest").write_text(f"#!/bin/sh\necho ran pytest\nexit {suite}\n")
    present = {**env, "UNLEARN_GUARD_CHROMIUM": shutil.which("sh")}
    done = subprocess.run(["bash", str(root / "scripts" / "test.sh")], env=present, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == expected, done.stderr
    assert done.stdout.splitlines()[-2:] == ["ran pytest", "ran check_wheel"]
    assert ("the wheel check failed" in done.stderr) == (wheel != 0)

