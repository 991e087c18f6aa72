"""Seed likelihood, PSNR, NLL-set distances and the memory relative distance d_N (SPEC 4, 5)."""

# The submodule `memory_distance` shares its name with the function `memory_distance`: import the
# submodule first, so that the function import below is what `stats.memory_distance` names.
from .memory_distance import MemoryDistance  # isort: skip
from .functional import (  # isort: skip
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
]
