"""The GPU run in one command, within one time budget: the CUDA checks first, then every GPU benchmark.

    bash benchmarks/gpu.sh                          # every step, in order, within --budget seconds
    bash benchmarks/gpu.sh --only tests,kernels     # some steps: a rerun of what failed or ran out of time
    bash benchmarks/gpu.sh --list                   # the steps, their caps and commands; runs nothing

Steps run in priority order (correctness, then the numbers the targets are about, then the rest);
each gets at most its cap and what is left of the budget, and is killed with its process group
past that. A step that does not fit in what is left is reported "not run (budget)", so the next
call can name it with --only. Without CUDA, or with a package missing, it stops before the first
step with one line that says so.

Writes to --out (default: $OUT where set, else benchmarks/gpu_out):
  gpu.log          every step's output, also printed as it runs
  summary.md       one row per step: status, exit code, seconds, the command
  results.md       the blocks the benchmarks appended to benchmarks/RESULTS.md during this run
  targets.md       the fast-path targets against what this run measured (_targets.py)
  environment.txt  nvidia-smi, the GPU torch sees, driver, CUDA, torch/triton/diffusers/... versions
A checkout copied without .git (a lent machine) records UNLEARN_GUARD_COMMIT as its commit.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TextIO

from _targets import targets_table

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent
RESULTS = BENCHMARKS / "RESULTS.md"
# Imported before the first step: a missing one stops the run with one line.
REQUIRED = ("torch", "triton", "diffusers", "transformers", "peft", "safetensors", "torchmetrics", "scipy", "unlearn_guard")


@dataclass(frozen=True)
class Step:
    """One command of the run: a benchmark script (in benchmarks/) or `-m pytest`, with its time cap."""

    name: str
    cap_s: int
    argv: tuple[str, ...]  # arguments after the Python interpreter
    what: str
    min_gpus: int = 1

    @property
    def script(self) -> str | None:
        """The benchmark script this step runs, or None for a module (pytest)."""
        return self.argv[0] if self.argv[0].endswith(".py") else None


# In priority order. The caps are estimates from the FLOP counts in RESULTS.md (an SD 1.4 UNet
# evaluation is 677 GFLOP; mofc makes 350 per image), not timings: nothing here has run on a GPU yet.
# The first five are what the targets are about; a 10-minute call may not reach the rest.
STEPS = (
    Step("tests", 240, ("-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "4", "-rfE",
                        "tests/test_gpu_path.py", "tests/test_kernels.py", "tests/test_fast_path.py"),
         "pytest -m gpu (sync-debug step loop, auto -> triton) and the kernel and fast-path tests compiled on CUDA"),
    Step("kernels", 90, ("kernel_bandwidth.py", "--batches", "1,16,64,256", "--autograd-max-batch", "16"),
         "fused kernels vs their PyTorch references and autograd, GB/s against the copy bandwidth"),
    Step("presets", 90, ("probe_presets.py", "--model", "sd14-shaped", "--device", "cuda", "--dtype", "bfloat16",
                         "--images", "16", "--presets", "track,fast", "--batch-sizes", "4,8,16"),
         "the training monitor's preset (track) and fast on the SD 1.4-shaped model: s/image per batch size"),
    Step("probe-sd14", 300, ("probe_throughput.py", "--model", "sd14-shaped", "--images", "4", "--presets", "mofc",
                             "--reference-images", "2", "--compile"),
         "SD 1.4-shaped mofc probe: reference-style vs torch batched vs fused+bf16 vs +compile, MFU"),
    Step("attack", 120, ("adversarial_prompt_speed.py", "--model", "sd14-shaped", "--device", "cuda",
                         "--dtype", "bfloat16", "--prompts", "8", "--batch-size", "8", "--timesteps", "10,510",
                         "--modes", "batched,batch1"),
         "UnlearnDiffAtk seconds per prompt, batched vs batch 1"),
    Step("sdxl", 240, ("probe_throughput.py", "--model", "sdxl-shaped", "--images", "4", "--presets", "fast",
                       "--skip-reference-style", "--batch-size", "4"),
         "SDXL base-shaped probe at 1024 px, torch batched vs fused+bf16"),
    Step("batch-sd14", 150, ("probe_throughput.py", "--model", "sd14-shaped", "--images", "16", "--presets", "fast",
                             "--skip-reference-style", "--batch-size", "16"),
         "SD 1.4-shaped probe at batch 16 (the larger-batch candidate)"),
    Step("world", 120, ("probe_throughput.py", "--model", "world", "--images", "64", "--presets", "mofc,fast",
                        "--reference-images", "4", "--compile"),
         "the shipped world model (32 px): the same rows"),
    Step("distributed", 300, ("distributed_scaling.py", "--device", "cuda", "--dtype", "bfloat16", "--model",
                              "sd14-shaped", "--images", "64", "--world-sizes", "auto", "--repeats", "3"),
         "data-parallel probing, 1 vs N processes (one GPU each)", min_gpus=2),
)


def preflight() -> str | None:
    """Why the run cannot start here (one line), or None. Checks CUDA first, then the imports."""
    try:
        import torch
    except ImportError as error:
        return f"gpu.sh: cannot import torch ({error}); run it with the repo's .venv or a Python that has torch"
    if not torch.cuda.is_available():
        return (f"gpu.sh: no CUDA device: torch {torch.__version__} sees none "
                f"(CUDA build: {torch.version.cuda or 'no'}); run it on a machine with an NVIDIA GPU")
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "gpu.sh: TRITON_INTERPRET=1 is set, so the kernels would run interpreted on the CPU; unset it"
    missing = []
    for name in REQUIRED:
        try:
            importlib.import_module(name)
        except ImportError as error:
            missing.append(f"{name} ({error})")
    if missing:
        return (f"gpu.sh: missing Python packages: {'; '.join(missing)}; install them, or put their wheels "
                f"in {ROOT / '.whl'} (docs/gpu.md)")
    return None


def environment() -> str:
    """What the numbers were measured on: nvidia-smi, torch's view of the GPU, and package versions."""
    import torch

    from unlearn_guard.provenance import git_commit, package_version, package_versions

    lines = []
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        lines.append(f"nvidia-smi: {smi.stdout.strip() or smi.stderr.strip()}")
    except (OSError, subprocess.SubprocessError) as error:
        lines.append(f"nvidia-smi: not run ({error})")
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        lines.append(f"cuda:{index}: {props.name}, {props.total_memory / 2**30:.1f} GiB, "
                     f"{props.multi_processor_count} SMs, capability {props.major}.{props.minor}")
    lines.append(f"torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})")
    versions = {**package_versions(), "triton": package_version("triton")}
    lines.append("packages: " + ", ".join(f"{name} {version}" for name, version in sorted(versions.items())))
    lines.append(f"python {sys.version.split()[0]} at {sys.executable}")
    lines.append(f"commit {git_commit()}")
    return "\n".join(lines) + "\n"


def selected_steps(only: str | None, gpus: int) -> list[tuple[Step, str | None]]:
    """The steps to run, in order, each with a reason to skip it (or None)."""
    names = [s.name for s in STEPS]
    wanted = names if only is None else [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise SystemExit(f"gpu.sh: --only: unknown step(s) {', '.join(unknown)}; the steps are {', '.join(names)}")
    return [(s, None if gpus >= s.min_gpus else f"skipped: needs {s.min_gpus} GPUs, {gpus} present")
            for s in STEPS if s.name in wanted]


def run_step(step: Step, seconds: float, python: str, log: TextIO) -> tuple[str, int | None, float]:
    """Run one step for at most `seconds`, teeing its output to stdout and `log`: (status, exit code, seconds)."""
    cwd = BENCHMARKS if step.script else ROOT
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("TRITON_INTERPRET", None)
    started = time.monotonic()
    process = subprocess.Popen([python, *step.argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    tee = threading.Thread(target=_tee, args=(process.stdout, log), daemon=True)
    tee.start()
    try:
        code: int | None = process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the step and whatever it started (compile workers, ranks)
        process.wait()
        code = None
    tee.join(timeout=30)
    elapsed = time.monotonic() - started
    if code is None:
        return f"timed out after {seconds:.0f} s", None, elapsed
    return ("passed" if code == 0 else "failed"), code, elapsed


def _tee(stream: IO[str], log: TextIO) -> None:
    for line in stream:
        sys.stdout.write(line)
        sys.stdout.flush()
        log.write(line)


@dataclass(frozen=True)
class Outcome:
    step: Step
    status: str  # passed, failed, timed out after N s, skipped: ..., not run (budget): ...
    exit_code: int | None
    seconds: float

    @property
    def to_rerun(self) -> bool:
        return self.status != "passed" and not self.status.startswith("skipped")


def run_steps(steps: list[tuple[Step, str | None]], budget: float, out: Path, python: str = sys.executable,
              results: Path = RESULTS) -> list[Outcome]:
    """Run `steps` in order within `budget` seconds; write gpu.log, results.md and summary.md to `out`.

    A step runs only if at least half its cap is left, for at most its cap or what is left."""
    started = time.monotonic()
    results_size = results.stat().st_size
    outcomes = []
    with open(out / "gpu.log", "a") as log:
        for step, skip in steps:
            left = budget - (time.monotonic() - started)
            if skip is None and left < step.cap_s / 2:
                skip = f"not run (budget): {left:.0f} s left of {budget:.0f}"
            header = f"\n=== {step.name}: {step.what}\n$ python {shlex.join(step.argv)}\n"
            print(header, end="", flush=True)
            log.write(header)
            if skip:
                print(skip)
                log.write(skip + "\n")
                outcomes.append(Outcome(step, skip, None, 0.0))
                continue
            status, code, seconds = run_step(step, min(step.cap_s, left), python, log)
            log.flush()
            outcomes.append(Outcome(step, status, code, seconds))
    with open(results) as appended:
        appended.seek(results_size)
        (out / "results.md").write_text(appended.read())
    (out / "targets.md").write_text(targets_table((out / "results.md").read_text()))
    lines = ["| step | status | exit | seconds | command |", "|---|---|---|---|---|"]
    lines += [f"| {o.step.name} | {o.status} | {'' if o.exit_code is None else o.exit_code} | {o.seconds:.1f} | "
              f"`python {shlex.join(o.step.argv)}` |" for o in outcomes]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines) + "\n\n" + (out / "targets.md").read_text(), end="")
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=540, help="seconds for all steps together")
    parser.add_argument("--only", default=None, help="comma list of step names (default: all, in order)")
    parser.add_argument("--out", default=os.environ.get("OUT") or str(BENCHMARKS / "gpu_out"))
    parser.add_argument("--list", action="store_true", help="print the steps and stop")
    args = parser.parse_args()
    if args.list:
        for step in STEPS:
            gpus = f", needs {step.min_gpus} GPUs" if step.min_gpus > 1 else ""
            print(f"{step.name:12s} cap {step.cap_s:4d} s{gpus}: {step.what}\n    python {shlex.join(step.argv)}")
        return
    selected_steps(args.only, gpus=1)  # an unknown name stops here, before anything is imported
    problem = preflight()
    if problem:
        print(problem, file=sys.stderr)
        raise SystemExit(2)

    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "environment.txt").write_text(environment())
    print((out / "environment.txt").read_text(), end="")
    outcomes = run_steps(selected_steps(args.only, torch.cuda.device_count()), args.budget, out)
    left_over = [o.step.name for o in outcomes if o.to_rerun]
    if left_over:
        print(f"\nrerun: bash benchmarks/gpu.sh --only {','.join(left_over)}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
