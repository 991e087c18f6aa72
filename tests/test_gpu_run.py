"""benchmarks/gpu.sh, the one-command GPU run: it stops at once without CUDA, every step's flags are
its script's, and the runner keeps to its budget, kills a step past its cap and says what to rerun."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from unlearn_guard import provenance

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
ROOT = BENCHMARKS.parent


@pytest.fixture(scope="module")
def gpu_run():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("_gpu_run")
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_it_stops_before_any_step_with_one_line(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(BENCHMARKS / "gpu.sh"), "--out", str(out)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("gpu.sh: no CUDA device: torch "), done.stderr
    assert not out.exists()  # nothing ran, nothing written


def test_an_unknown_step_name_is_one_line_naming_the_steps(tmp_path):
    done = subprocess.run(["bash", str(BENCHMARKS / "gpu.sh"), "--only", "tests,kernal", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip() == ("gpu.sh: --only: unknown step(s) kernal; the steps are tests, kernels, presets, "
                                   "probe-sd14, attack, sdxl, batch-sd14, world, distributed")


def test_every_step_passes_flags_its_script_accepts(gpu_run):
    """A renamed or removed flag would cost a GPU call to find; here it costs nothing."""
    for step in gpu_run.STEPS:
        if step.script is None:
            assert step.argv[:2] == ("-m", "pytest"), step
            files = [a for a in step.argv if a.startswith("tests/")]
            assert files and all((ROOT / f).is_file() for f in files), step
            continue
        module = importlib.import_module(step.script.removesuffix(".py"))
        args = module.build_parser().parse_args(list(step.argv[1:]))  # SystemExit(2) on an unknown flag
        assert not getattr(args, "no_record", False), f"{step.name} must record its rows"


def _step(gpu_run, folder: Path, name: str, code: str, cap: int = 30):
    script = folder / f"{name}.py"
    script.write_text(textwrap.dedent(code))
    return gpu_run.Step(name, cap, (str(script),), f"the {name} step")


def test_the_runner_records_each_outcome_and_what_to_rerun(gpu_run, tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# earlier rows\n")
    pid_file = tmp_path / "grandchild.pid"
    steps = [
        (_step(gpu_run, tmp_path, "ok", f"""
            print('hello from ok')
            open({str(results)!r}, 'a').write('### new block\\n| a |\\n')"""), None),
        (_step(gpu_run, tmp_path, "bad", "import sys; print('about to fail'); sys.exit(3)"), None),
        (_step(gpu_run, tmp_path, "skipped", "print('unexpected output')"), "skipped: needs 2 GPUs, 1 present"),
        (_step(gpu_run, tmp_path, "hangs", f"""
            import subprocess, time
            child = subprocess.Popen(['sleep', '300'])
            open({str(pid_file)!r}, 'w').write(str(child.pid))
            print('started', flush=True)
            time.sleep(300)""", cap=3), None),
        (_step(gpu_run, tmp_path, "late", "print('unexpected output')", cap=400), None),  # more than twice what is left
    ]
    outcomes = gpu_run.run_steps(steps, budget=120, out=tmp_path, results=results)

    status = {o.step.name: (o.status, o.exit_code) for o in outcomes}
    assert status["ok"] == ("passed", 0)
    assert status["bad"] == ("failed", 3)
    assert status["skipped"] == ("skipped: needs 2 GPUs, 1 present", None)
    assert status["hangs"][0].startswith("timed out after 3 s") and status["hangs"][1] is None
    assert status["late"][0].startswith("not run (budget): ")
    assert [o.step.name for o in outcomes if o.to_rerun] == ["bad", "hangs", "late"]

    log = (tmp_path / "gpu.log").read_text()
    assert "hello from ok" in log and "about to fail" in log and "started" in log and "unexpected output" not in log
    assert (tmp_path / "results.md").read_text() == "### new block\n| a |\n"  # this run's rows only
    assert (tmp_path / "targets.md").read_text().count("| not measured | - |") == 5  # no benchmark table here
    summary = (tmp_path / "summary.md").read_text().splitlines()
    assert len(summary) == 2 + len(steps) and summary[3].startswith("| bad | failed | 3 | ")

    grandchild = int(pid_file.read_text())  # killed with the step's process group
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))  # a zombie is gone


def test_a_copy_without_git_records_the_commit_it_is_told(monkeypatch):
    def no_checkout(*args, **kwargs):
        raise subprocess.CalledProcessError(128, args[0])

    monkeypatch.setattr(provenance.subprocess, "run", no_checkout)
    monkeypatch.delenv("UNLEARN_GUARD_COMMIT", raising=False)
    assert provenance.git_commit() is None
    monkeypatch.setenv("UNLEARN_GUARD_COMMIT", "0123abc")
    assert provenance.git_commit() == "0123abc"


# --------------------------------------------------------------------------- the targets table
def _block(title: str, header: list[str], rows: list[list[object]]) -> str:
    from _results import markdown_table

    return f"\n### {title}, 2026-12-07 09:00 UTC\ncommit abc; device cuda:H100\n\n{markdown_table(header, rows)}\n\nnote\n"


KERNEL_HEADER = ["op", "batch", "variant", "ms", "ms/image", "speedup", "GB/s", "of copy BW", "max |diff| vs fp64"]
THROUGHPUT_HEADER = ["preset", "variant", "images", "s/image", "images/s", "speedup", "UNet evals/image",
                     "UNet TFLOP/s", "of matmul peak", "wall s", "vs torch batched"]
PRESETS_HEADER = ["preset", "batch", "images", "s/image", "UNet evals/image", "ms/UNet eval", "PSNR mean"]


def test_the_targets_are_read_off_the_runs_tables(gpu_run):
    """Synthetic GPU-like blocks, written by the benchmarks' own table writer: each target met or
    missed as its numbers say, the best fused row and chunk chosen, the largest batch for bandwidth."""
    import _targets

    results = (
        _block("kernels: latent 4,64,64, bfloat16", KERNEL_HEADER, [
            ["noise_regularization", 1, "autograd (released)", 30.0, 30.0, 1.0, 0.1, 0.0, "1e-6"],
            ["noise_regularization", 1, "triton fused", 0.2, 0.2, 150.0, 20.0, 0.01, "1e-2"],
            ["noise_regularization", 16, "autograd (released)", 40.0, 2.5, 1.0, 1.0, 0.0, "1e-6"],
            ["noise_regularization", 16, "triton fused", 0.5, 0.03, 80.0, 90.0, 0.03, "1e-2"],
            ["noise_regularization", 256, "triton fused", 5.0, 0.02, 1.0, 900.0, 0.3, "1e-2"],  # no autograd row
            ["renoise_update", 1, "triton fused", 0.01, 0.01, 3.0, 200.0, 0.07, "1e-7"],
            ["renoise_update", 256, "triton fused", 0.2, 0.001, 3.0, 2400.0, 0.8, "1e-7"],
            ["sum_of_squares", 256, "triton fused", 0.1, 0.0004, 2.0, 1500.0, 0.5, "1e-5"]])
        + _block("probe_throughput: sd14-shaped, presets mofc", THROUGHPUT_HEADER, [
            ["mofc", "reference-style", 4, 20.0, 0.05, 1.0, 350, 10.0, 0.01, 80.0, ""],
            ["mofc", "torch batched", 8, 6.0, 0.16, 3.3, 350, 40.0, 0.05, 48.0, ""],
            ["mofc", "fused + bfloat16", 8, 1.2, 0.8, 16.7, 350, 200.0, 0.25, 9.6, ""],
            ["mofc", "fused + bfloat16 + compile", 8, 0.9, 1.1, 22.2, 350, 260.0, 0.33, 7.2, ""]])
        + _block("probe_presets: sd14-shaped, bfloat16, latent 4x64x64", PRESETS_HEADER, [
            ["track", 4, 16, 0.25, 40, 6.0, 20.0], ["track", 16, 16, 0.14, 40, 3.5, 20.0],
            ["fast", 16, 16, 0.10, 40, 2.5, 20.0]]))  # not the monitor's preset: not read
    rows = [line.split(" | ") for line in _targets.targets_table(results).splitlines()[2:]]
    found = {row[0].lstrip("| "): (row[1], row[2].rstrip(" |")) for row in rows}
    assert found == {
        "mofc <= 1.0 s/image": ("0.900 s/image (fused + bfloat16 + compile)", "yes"),
        "mofc >= 15x reference-style": ("22.2x (fused + bfloat16 + compile)", "yes"),
        "in-training preset (track) <= 0.15 s/image": ("0.140 s/image (chunk 16)", "yes"),
        "regulariser >= 100x autograd": ("batch 1: 150x, batch 16: 80x", "no"),  # the worst batch decides
        "renoise_update >= 70% of copy bandwidth": ("80.0% at batch 256", "yes"),
        "sum_of_squares >= 70% of copy bandwidth": ("50.0% at batch 256", "no"),
        "squared_error >= 70% of copy bandwidth": ("not measured", "-"),
    }


def test_a_run_without_the_tables_measures_nothing(gpu_run):
    import _targets

    table = _targets.targets_table("### sdxl only\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    assert table.count("| not measured | - |") == 5 and "yes" not in table and "| no |" not in table


def test_the_environment_record_names_what_a_gpu_number_depends_on(gpu_run, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi: said, not raised
    lines = gpu_run.environment().splitlines()
    assert lines[0].startswith("nvidia-smi: not run (")
    packages = next(line for line in lines if line.startswith("packages: "))
    assert all(f"{name} " in packages for name in ("torch", "triton", "diffusers", "transformers", "peft"))
    assert lines[-1].startswith("commit ") and any(line.startswith("torch ") for line in lines)
