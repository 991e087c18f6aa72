"""Every benchmark script runs end to end at tiny sizes (correctness only; no timing assertions)."""

from __future__ import annotations

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
    "callback_overhead.py": ["--iterations", "4", "--every", "2", "--images", "2", "--threads", "1"],
    # every model of one concept (ESD runs of 2 iterations), 2+2 images, one cheap preset
    "calibrate_memory_signal.py": ["--concepts", "circle", "--images", "2", "--presets", "fast", "--esd-iterations", "1,2",
                                   "--memory-pool", "2", "--accuracy-images", "2", "--threads", "1"],
    "decision_interval.py": ["--sizes", "2", "--sets", "2", "--threads", "1"],
    # Triton rows run under the interpreter (TRITON_INTERPRET=1 inherited from conftest).
    "kernels.py": ["--batches", "2", "--latent", "4,16,16", "--image-side", "32", "--repeats", "1", "--threads", "1"],
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
    "memory_search.py": ["--images", "2", "--memories", "2", "--preset", "fast", "--esd-iterations", "1",
                         "--decoder-steps", "2", "--mofc-steps", "3", "--threads", "1"],
}


@pytest.mark.parametrize("script", sorted(CASES))
def test_benchmark_runs(script, tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *CASES[script], "--no-record"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "|---" in done.stdout  # it printed its table
