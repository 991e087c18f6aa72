"""Shared fixtures: tiny seeded models built from configs (no network) and one tolerance table."""

from __future__ import annotations

import os

# Under pytest-xdist the golden parity test runs 2 OpenMP threads beside the other worker: threads that
# sleep while they wait, instead of spinning, keep that cheap (scripts/test.sh sets it too).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

# Triton kernels run on CPU tensors under Triton's interpreter, which Triton reads when a kernel
# is defined: set it before anything imports unlearn_guard. A CUDA machine runs them compiled
# (the kernel tests put their tensors on KERNEL_DEVICE).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
KERNEL_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# Keep CI predictable on 2 cores. Under pytest-xdist (scripts/test.sh runs one worker per core)
# every worker and every process it starts runs 1 thread: two OpenMP threads per worker on 2 cores
# spin against the other worker and run several times slower. Otherwise OMP_NUM_THREADS, or 2.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", min(2, os.cpu_count() or 1))))

# One tolerance table, keyed by dtype: (rtol, atol). Float64 references use the first row.
TOLERANCES = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (2e-2, 2e-2),
    torch.float16: (5e-3, 5e-3),
}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype | None = None, scale: float = 1.0):
    """torch.testing.assert_close with the table's tolerance for `dtype` (default: actual's dtype)."""
    rtol, atol = TOLERANCES[dtype or actual.dtype]
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=rtol * scale, atol=atol * scale)


@pytest.fixture(scope="session")
def tiny_components():
    from unlearn_guard.models.tiny import build_tiny_components

    return build_tiny_components(seed=0)


@pytest.fixture()
def tiny_model(tiny_components):
    from unlearn_guard.models import DiffusionModel

    return DiffusionModel.from_components(**tiny_components)


@pytest.fixture()
def tiny_images():
    """Four fresh 64x64 RGB images in [0, 1] with smooth structure (not pure noise)."""
    g = torch.Generator().manual_seed(1234)
    coarse = torch.rand(4, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False).clamp(0, 1)


# The slowest files first (CPU seconds per file under pytest-xdist on 2 cores, benchmarks/RESULTS.md "CI
# time"): scripts/test.sh hands each worker a whole file at a time (--dist loadfile), so a slow file picked
# up last would run alone at the end. The golden parity run (2 threads) goes first.
SLOWEST_FILES_FIRST = ("test_released_parity.py", "test_benchmarks.py", "test_benchmarks_more.py", "test_distributed.py",
                       "test_ground_truth.py", "test_sd14_shaped.py", "test_readme.py", "test_world.py",
                       "test_cli_hardening.py", "test_cli_gate.py", "test_fast_path.py", "test_demo.py", "test_sdxl.py",
                       "test_gate_attacks.py", "test_adversarial_prompt.py", "test_probe.py", "test_callbacks.py",
                       "test_divergence.py", "test_esd.py", "test_renoise.py", "test_losses.py")


def pytest_collection_modifyitems(config, items):
    """Reorder whole files only (slowest first); the order of tests inside a file is kept."""
    rank = {name: i for i, name in enumerate(SLOWEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
