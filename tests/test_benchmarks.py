"""Every benchmark script runs end to end at tiny sizes (correctness only; no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

# "--threads 1" everywhere: tiny sizes gain nothing from a second thread, and on a shared 2-core
# machine two OpenMP threads spin against the other jobs (callback_overhead.py at these sizes: 67 s
# with 1 thread, over the 900 s timeout with 2, measured at load average 5).
CASES = {
    "probe_presets.py": ["--images", "1", "--presets", "fast", "--batch-sizes", "1", "--threads", "1"],
    "replay_paper_table.py": ["--concepts", "circle", "--iterations", "2", "--images", "2", "--accuracy-images", "2",
                              "--preset", "fast", "--threads", "1"],
    # the checkpoints re-probed with `fast`, not mofc: the rank part runs end to end (mofc made it 23 of 35 s)
    "callback_overhead.py": ["--iterations", "4", "--every", "2", "--images", "2", "--threads", "1",
                             "--rank-preset", "fast"],
    # every model of one concept (ESD runs of 2 iterations), 2+2 images, one cheap preset, also for the
    # stars, the noise and the memory-seed pool (mofc there made 44 of the script's 86 s of CPU)
    "calibrate_memory_signal.py": ["--concepts", "circle", "--images", "2", "--presets", "fast", "--esd-iterations", "1,2",
                                   "--memory-pool", "2", "--accuracy-images", "2", "--anchor-preset", "fast",
                                   "--threads", "1"],
    "decision_interval.py": ["--sizes", "2", "--sets", "2", "--threads", "1"],
    # Triton rows run under the interpreter (TRITON_INTERPRET=1 inherited from conftest).
    "kernel_bandwidth.py": ["--batches", "2", "--latent", "4,16,16", "--image-side", "32", "--repeats", "1", "--threads", "1"],
    "probe_throughput.py": ["--images", "2", "--presets", "fast", "--threads", "1"],
    # 2 of the golden run's 50 steps: the script end to end; agreement is the golden test's job.
    "released_parity.py": ["--rows", "batched", "--steps", "2", "--threads", "1"],
    "memory_aware_erasure.py": ["--concepts", "circle", "--iterations", "2", "--pool", "2", "--images", "2",
                                "--accuracy-images", "2", "--threads", "1", "--every", "1", "--eval-preset", "fast",
                                "--ci-steps", "2", "--ci-images", "2", "--ci-generations", "2",
                                "--max-time-factor", "2", "--target", "1.0", "--max-prompt-accuracy", "1"],  # stops at 1
    "plot_memory_aware_erasure.py": ["--output", "plot.png"],  # reads the recorded RESULTS.md tables
    "memory_loss_ablation.py": ["--name", "smoke", "--iterations", "1", "--every", "1", "--weight", "10",
                                "--null", "0", "--guidance", "1", "--accuracy-images", "2", "--out", "runs"],
    "threads_contention.py": ["--steps", "3", "--settings", "0"],  # 1 thread, no competitor: seconds
    # One 2-process launch (start-up dominates: ~20 s on 2 busy cores); 1 vs 2 is the real run's job.
    "distributed_scaling.py": ["--world-sizes", "2", "--images", "2", "--threads", "1", "--timeout", "600"],
    "concept_inversion_attack.py": ["--concepts", "circle", "--checkpoints", "1", "--images", "2", "--steps", "2",
                                    "--generations", "2", "--threads", "1"],
    "typical_set_recheck.py": ["--images", "2", "--presets", "fast", "--threads", "1"],
    "memory_search.py": ["--images", "2", "--memories", "2", "--preset", "fast", "--esd-iterations", "1",
                         "--decoder-steps", "2", "--mofc-steps", "3", "--threads", "1"],
    # 2 prompts, 2 blocks of 2 steps, in process only (a process per prompt pays ~10 s of start-up each)
    "adversarial_prompt_speed.py": ["--prompts", "2", "--timesteps", "50,150", "--steps", "2",
                                    "--modes", "batched,batch1", "--threads", "1"],
    # 1 concept, 2 prompts per split, 1 block of 1 step, ESD runs of 1 iteration, tiny probe/CI, cache in
    # the test's folder (the real run caches under benchmarks/.adversarial_world)
    "adversarial_prompt_world.py": ["--concepts", "circle", "--prompts", "2", "--timesteps", "50", "--steps", "1",
                                    "--esd-iterations", "1", "--null-draws", "1", "--probe-images", "2",
                                    "--prompt-images", "2", "--accuracy-images", "1", "--ci-steps", "2",
                                    "--ci-images", "2", "--ci-generations", "2", "--cache", "cache",
                                    "--plot", "plot.png", "--threads", "1",
                                    "--memory-aware-args=--iterations 2 --target 0.5 --pool 2 --every 2 "
                                    "--accuracy-images 1 --monitor-preset fast",
                                    # the models the tuning and the memory-aware table need (ESD-u and the
                                    # original run no code path the other rows do not)
                                    "--models", "retrained,ESD-x 1 it,ESD-x + memory loss"],
    # two settings (one ancestral) of 2 steps, 2 generations, one ESD iteration
    "sampling_settings.py": ["--settings", "ddim:4:2,euler-a:4:2", "--generations", "2", "--esd-iterations", "1",
                             "--threads", "1"],
    # both families, regulariser on and off, fp32 chunk 1 / chunk 2 / bf16 against fp64: 3 steps, 2 + 2 images
    "precision_sensitivity.py": ["--images", "2", "--steps", "3", "--threads", "1"],
    # both worlds fine-tuned for 2 steps on 256 images (cached in the test's folder), fast on 2 + 2 images
    "v_prediction_world.py": ["--steps", "2", "--dataset-size", "256", "--batch", "8", "--images", "2", "--preset",
                              "fast", "--accuracy-images", "2", "--cache", "cache", "--threads", "1"],
    "utility_check.py": ["--concepts", "circle", "--perturb", "0.3", "--esd-iterations", "1", "--generations", "1",
                         "--settings", "ddim:4:2,pndm:3:2", "--threads", "1"],
}


# All the scripts run from one helper process that imports torch, diffusers and the package once and
# forks a fresh child per script (tests/helpers/speed_bench_forkrun.py): each child is still its own
# process running the script as __main__ with its own argv, folder and exit status, but it skips the
# ~8 s of CPU that each `python SCRIPT` spent importing (16 scripts: about two minutes of CPU).
FORKRUN = Path(__file__).resolve().parent / "helpers" / "speed_bench_forkrun.py"
# Negative controls for the shared runner: a failing script must fail as `python SCRIPT` would.
CONTROLS = {
    "_raises.py": ("import sys\nprint('before', sys.argv[1:])\nraise RuntimeError('boom')\n", ["a", "b"]),
    "_exits_3.py": ("import sys\nsys.exit(3)\n", []),
    "_returns.py": ("import os, sys\nprint('|---', os.path.basename(sys.path[0]), os.getcwd() == os.path.dirname("
                    "os.path.abspath(__file__)))\n", []),
}


# The scripts run in two halves, this file's and tests/test_benchmarks_more.py's, so that the two
# pytest-xdist workers (a file each at a time) run them side by side.
# About 105 s of CPU each half (typical_set_recheck.py joined this file's half when calibrate_memory_signal.py's
# smoke run took fast for its stars, noise and pool: benchmarks/RESULTS.md, "CI time").
MORE = ("memory_aware_erasure.py", "memory_search.py", "memory_loss_ablation.py", "replay_paper_table.py",
        "callback_overhead.py", "probe_throughput.py", "decision_interval.py", "v_prediction_world.py")
HERE = tuple(sorted(set(CASES) - set(MORE)))


def _selected_scripts(request) -> list[str]:
    """The benchmark scripts this pytest run selected in the requesting file (so `-k kernels` runs one
    script, not all)."""
    return sorted({item.callspec.params["script"] for item in request.session.items
                   if getattr(item, "originalname", None) == "test_benchmark_runs" and item.path == request.path})


@pytest.fixture(scope="module")
def benchmark_runs(request, tmp_path_factory):
    """{script: {returncode, stdout, stderr, seconds}} for every selected script and each control."""
    root = tmp_path_factory.mktemp("benchmarks")
    jobs = []
    for script in _selected_scripts(request):
        folder = root / script.removesuffix(".py")
        folder.mkdir()
        jobs.append({"name": script, "script": str(BENCHMARKS / script), "argv": [*CASES[script], "--no-record"],
                     "cwd": str(folder), "timeout": 900})
    for name, (text, argv) in CONTROLS.items():
        folder = root / name.removesuffix(".py")
        folder.mkdir()
        (folder / name).write_text(text)
        jobs.append({"name": name, "script": str(folder / name), "argv": argv, "cwd": str(folder), "timeout": 60})
    (root / "jobs.json").write_text(json.dumps(jobs))
    done = subprocess.run([sys.executable, str(FORKRUN), str(root / "jobs.json"), str(root / "results.json")],
                          capture_output=True, text=True, timeout=900 * len(jobs))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((root / "results.json").read_text())


def check_script_ran(done: dict) -> None:
    assert done["returncode"] == 0, done["stderr"][-3000:]
    assert "|---" in done["stdout"]  # it printed its table


def test_the_two_halves_hold_every_script():
    assert set(HERE) | set(MORE) == set(CASES) and not set(HERE) & set(MORE)
    assert {p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_")} == set(CASES)


@pytest.mark.parametrize("script", HERE)
def test_benchmark_runs(script, benchmark_runs):
    check_script_ran(benchmark_runs[script])


def test_the_shared_runner_reports_as_python_would(benchmark_runs):
    """The runner behind test_benchmark_runs: an uncaught exception is exit 1 with its traceback on
    stderr, sys.exit(3) is 3, and a script sees its own argv, folder and sys.path[0]."""
    raised = benchmark_runs["_raises.py"]
    assert raised["returncode"] == 1 and raised["stdout"] == "before ['a', 'b']\n", raised
    assert "Traceback" in raised["stderr"] and "RuntimeError: boom" in raised["stderr"], raised
    assert benchmark_runs["_exits_3.py"]["returncode"] == 3
    returned = benchmark_runs["_returns.py"]
    assert returned["returncode"] == 0 and returned["stdout"] == "|--- _returns True\n", returned


def test_the_attacks_gpu_line_runs_its_path_on_a_tiny_model(tmp_path):
    """benchmarks/gpu.sh's UnlearnDiffAtk line (`--model sd14-shaped`: random weights and targets, a judge
    that never says yes, the extrapolation to the 142 nudity prompts) on the same path at toy size."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / "adversarial_prompt_speed.py"), "--model", "tiny",
                           "--prompts", "2", "--batch-size", "2", "--timesteps", "10,510", "--steps", "2",
                           "--generation-steps", "2", "--modes", "batched,batch1", "--threads", "1", "--no-record"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| batch")]
    assert len(rows) == 4, done.stdout  # two speed rows, two extrapolation rows
    assert all(row.split("|")[4].strip() == "0/2" for row in rows[:2])  # never-true judge: ASR 0 of 2
    assert all(row.rstrip(" |").endswith("yes") for row in rows[:2])  # batched answers equal batch 1's
    assert "hours for 142 prompts" in done.stdout
