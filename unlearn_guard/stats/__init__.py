"""Seed likelihood, PSNR, NLL-set distances and the memory relative distance d_N (SPEC 4, 5);
the Wilson interval of a success rate (attacks)."""

from .functional import (
    MemoryDistanceResult,
    bootstrap_interval,
    gaussian_w2_squared,
    memory_distance,
    memory_relative_distance,
    nll_distance,
    normal_nll_set,
    psnr,
    seed_nll,
    wasserstein_1,
)
from .proportion import wilson_interval

__all__ = [
    "MemoryDistance",
    "MemoryDistanceResult",
    "bootstrap_interval",
    "gaussian_w2_squared",
    "memory_distance",
    "memory_relative_distance",
    "nll_distance",
    "normal_nll_set",
    "psnr",
    "seed_nll",
    "wasserstein_1",
    "wilson_interval",
]


def __getattr__(name: str):
    """`MemoryDistance` on first use: its module imports torchmetrics (about 1.3 s of CPU at every
    start-up, measured), which the probe, the gate and the command line never need."""
    if name == "MemoryDistance":
        from .metric import MemoryDistance

        globals()[name] = MemoryDistance
        return MemoryDistance
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
