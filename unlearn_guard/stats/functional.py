"""Seed likelihood, PSNR, distances between NLL sets and the memory relative distance d_N.

Pure functions (SPEC 4 and SPEC 5, docs/spec.md); `MemoryDistance` in `memory_distance.py` is the
stateful twin of `memory_distance`. Every statistic is computed in float64.

Notation (SPEC symbol -> name here):
    z, z_T          -> seeds           one inverted seed per image, (B, ...)
    NLL(z)          -> seed_nll        sum_i (z_i^2 / 2 + ln(2 pi) / 2), the constant included
    E, R, N         -> nll_erased, nll_reference, nll_normal
                                       NLLs of the erased concept's seeds, of reference seeds and
                                       of n_normal draws z ~ N(0, I) with z_T's shape
    D(A, B)         -> nll_distance    `mofc`: Gaussian squared W2, (m_A - m_B)^2 + (s_A - s_B)^2
                                       `w1`:   empirical 1-Wasserstein distance
    d_N(E, R)       -> memory_relative_distance   D(E, N) / D(R, N)
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch

from ..config import DistanceKind
from ..errors import InputError, InsufficientDataError, NonFiniteError
from ..kernels.dispatch import Backend
from ..kernels.seed_statistics import squared_error, sum_of_squares

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence[float]]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)  # 0.9189385..., the per-entry constant of NLL
_PSNR_RANGE_TOLERANCE = 1e-6


def first_indices(indices: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in indices[:limit])
    return shown + (f", ... ({len(indices)} in all)" if len(indices) > limit else "")


# --- Seed likelihood (SPEC 4) ------------------------------------------------------------------


def seed_nll(seeds: torch.Tensor, backend: Backend = "torch") -> torch.Tensor:
    """Negative log-likelihood of each seed under N(0, I), constant included (SPEC 4).

    Args:
        seeds: (B, ...) floating tensor; each seed is everything after the batch dimension.
        backend: "torch" (float64 reference), "triton" or "auto" (fused reduction on CUDA).

    Returns:
        (B,) float64 on the seeds' device. An all-zero SD 1.4 seed (4, 64, 64) gives 15,055.89.
    """
    if not isinstance(seeds, torch.Tensor):
        raise InputError(f"seeds: expected a torch.Tensor of shape (B, ...), got {type(seeds).__name__}")
    if seeds.dim() == 0 or seeds.numel() == 0:
        raise InputError(f"seeds: expected a non-empty tensor of shape (B, ...), got shape {tuple(seeds.shape)}")
    if not seeds.is_floating_point():
        raise InputError(f"seeds: expected a floating-point tensor, got dtype {seeds.dtype}")
    z = seeds.detach().reshape(seeds.shape[0], -1)  # (B, D)
    bad = (~torch.isfinite(z)).any(dim=1).nonzero().flatten().tolist()
    if bad:
        raise NonFiniteError(f"seeds: NaN or Inf in the seeds at batch indices [{first_indices(bad)}]")
    entries_per_seed = z.shape[1]
    return 0.5 * sum_of_squares(z, backend=backend) + entries_per_seed * _HALF_LOG_2PI  # (B,)


def check_seed_shape(seed_shape: Any) -> tuple[int, ...]:
    shape = tuple(seed_shape) if isinstance(seed_shape, (tuple, list, torch.Size)) else None
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape):
        raise InputError(f"seed_shape: expected a non-empty tuple of positive ints, got {seed_shape!r}")
    return shape


def normal_nll_set(seed_shape: tuple[int, ...], n: int, seed: int, one_at_a_time: bool = False) -> torch.Tensor:
    """NLLs of the N set: `n` draws z ~ N(0, I) of `seed_shape` (SPEC 4).

    The draws come, in float32 on CPU, from `torch.Generator().manual_seed(seed)`: one
    `torch.randn((n, *seed_shape))`, or with `one_at_a_time` n draws of shape (1, *seed_shape)
    as the released code makes them. The set depends only on (seed_shape, n, seed) and the
    draw mode (the two agree whenever a seed has a multiple of 16 entries, as SD's do).

    Returns:
        (n,) float64 on CPU.
    """
    shape = check_seed_shape(seed_shape)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise InputError(f"n: expected an int >= 1 (number of N(0, I) draws), got {n!r}")
    generator = torch.Generator().manual_seed(int(seed))
    if one_at_a_time:
        draws = torch.cat([torch.randn((1, *shape), generator=generator) for _ in range(n)])
    else:
        draws = torch.randn((n, *shape), generator=generator)  # (n, *seed_shape) float32
    return seed_nll(draws)


# --- Reconstruction quality --------------------------------------------------------------------


def psnr(
    reconstruction: torch.Tensor, target: torch.Tensor, quantize: bool = True, backend: Backend = "torch"
) -> torch.Tensor:
    """PSNR of each image pair, 10 log10(1 / MSE) over all values of the image (peak 1.0).

    Args:
        reconstruction: (B, C, H, W) in [0, 1]; C is 3 for RGB images.
        target: same shape and range.
        quantize: round both to 8 bits first, round(x * 255) / 255 (the `mofc` setting).
        backend: "torch" (float64 reference), "triton" or "auto" (fused reduction on CUDA).

    Returns:
        (B,) float64 on the inputs' device; identical images give +inf.
    """
    for name, value in (("reconstruction", reconstruction), ("target", target)):
        if not isinstance(value, torch.Tensor) or value.dim() != 4:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise InputError(f"{name}: expected a tensor of shape (B, C, H, W), got {shape}")
    if reconstruction.shape != target.shape:
        raise InputError(
            f"reconstruction and target must have the same shape, got {tuple(reconstruction.shape)} "
            f"and {tuple(target.shape)}"
        )
    for name, x in (("reconstruction", reconstruction), ("target", target)):
        x = x.detach().flatten(1)  # (B, C*H*W)
        bad = (~torch.isfinite(x)).any(dim=1).nonzero().flatten().tolist()
        if bad:
            raise NonFiniteError(f"{name}: NaN or Inf in images at batch indices [{first_indices(bad)}]")
        low, high = x.min().item(), x.max().item()
        if low < -_PSNR_RANGE_TOLERANCE or high > 1.0 + _PSNR_RANGE_TOLERANCE:
            outside = ((x < -_PSNR_RANGE_TOLERANCE) | (x > 1.0 + _PSNR_RANGE_TOLERANCE)).any(dim=1)
            indices = outside.nonzero().flatten().tolist()
            raise InputError(
                f"{name}: values must lie in [0, 1], got min {low:.6g} and max {high:.6g} "
                f"(images at batch indices [{first_indices(indices)}])"
            )
    # Clamp to [0, 1] (and 8-bit rounding) happen inside the squared-error reduction.
    mse = squared_error(reconstruction, target, quantize, backend=backend) / reconstruction[0].numel()  # (B,)
    return 10.0 * torch.log10(1.0 / mse)  # mse == 0 -> 1/0 = inf -> +inf


# --- Distances between NLL sets (SPEC 5) -------------------------------------------------------


def _as_sample(values: ArrayLike, name: str, minimum: int = 1) -> np.ndarray:
    """A 1-D float64 numpy copy of `values`, checked for size and finiteness."""
    if isinstance(values, torch.Tensor):
        array = values.detach().to(device="cpu", dtype=torch.float64).numpy()
    else:
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise InputError(f"{name}: expected a 1-D sequence of numbers, got {type(values).__name__}") from error
    if array.ndim != 1:
        raise InputError(f"{name}: expected a 1-D sample, got shape {array.shape}")
    if array.size < minimum:
        raise InsufficientDataError(f"{name}: has {array.size} values, at least {minimum} needed")
    bad = np.flatnonzero(~np.isfinite(array)).tolist()
    if bad:
        raise NonFiniteError(f"{name}: NaN or Inf at indices [{first_indices(bad)}]")
    return array


def _gaussian_w2_squared(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.mean() - b.mean()) ** 2 + (a.std(ddof=0) - b.std(ddof=0)) ** 2)


def _wasserstein_1(a: np.ndarray, b: np.ndarray) -> float:
    # W1 = integral over x of |F_a(x) - F_b(x)|. Both empirical CDFs are step functions that only
    # change at sample points, so the integral is a sum over the gaps of the merged sorted support.
    a, b = np.sort(a), np.sort(b)
    support = np.sort(np.concatenate([a, b]))  # (|a| + |b|,)
    gaps = np.diff(support)  # width of each interval [support[k], support[k+1])
    cdf_a = np.searchsorted(a, support[:-1], side="right") / a.size  # F_a on each interval
    cdf_b = np.searchsorted(b, support[:-1], side="right") / b.size
    return float(np.sum(np.abs(cdf_a - cdf_b) * gaps))


_DISTANCES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "mofc": _gaussian_w2_squared,
    "w1": _wasserstein_1,
}


def distance_function(kind: str) -> Callable[[np.ndarray, np.ndarray], float]:
    if kind not in _DISTANCES:
        raise InputError(f"kind: unknown distance kind {kind!r}; expected one of {sorted(_DISTANCES)}")
    return _DISTANCES[kind]


def gaussian_w2_squared(a: ArrayLike, b: ArrayLike) -> float:
    """`mofc` distance: squared W2 between Gaussians fitted to two 1-D samples (ddof=0, SPEC 5)."""
    return _gaussian_w2_squared(_as_sample(a, "a"), _as_sample(b, "b"))


def wasserstein_1(a: ArrayLike, b: ArrayLike) -> float:
    """`w1` distance: empirical 1-Wasserstein distance between two 1-D samples (sizes may differ)."""
    return _wasserstein_1(_as_sample(a, "a"), _as_sample(b, "b"))


def nll_distance(a: ArrayLike, b: ArrayLike, kind: DistanceKind) -> float:
    """D(A, B) of SPEC 5 for `kind` "mofc" (Gaussian squared W2) or "w1" (empirical W1)."""
    distance = distance_function(kind)
    return distance(_as_sample(a, "a"), _as_sample(b, "b"))


# --- Memory relative distance (SPEC 5) ---------------------------------------------------------


def _nll_sets(
    nll_erased: ArrayLike, nll_reference: ArrayLike, nll_normal: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # d_N needs at least 2 values per set: one value has no spread, so D is not a comparison.
    return (
        _as_sample(nll_erased, "nll_erased (set E)", minimum=2),
        _as_sample(nll_reference, "nll_reference (set R)", minimum=2),
        _as_sample(nll_normal, "nll_normal (set N)", minimum=2),
    )


def _distances_to_normal(
    erased: np.ndarray, reference: np.ndarray, normal: np.ndarray, kind: str
) -> tuple[float, float]:
    """(D(E, N), D(R, N)); raises when D(R, N) == 0 makes d_N undefined."""
    distance = distance_function(kind)
    erased_to_normal, reference_to_normal = distance(erased, normal), distance(reference, normal)
    if reference_to_normal == 0.0:
        raise InputError(
            f"d_N is undefined: the {kind!r} distance between the reference set R and the normal set N "
            "is 0, so there is no scale to divide by (are R's NLLs the N set itself?)"
        )
    return erased_to_normal, reference_to_normal


def memory_relative_distance(
    nll_erased: ArrayLike, nll_reference: ArrayLike, nll_normal: ArrayLike, kind: DistanceKind = "mofc"
) -> float:
    """d_N(E, R) = D(E, N) / D(R, N) (SPEC 5). Near 1: the erased concept is still remembered.

    Args:
        nll_erased: (|E|,) NLLs of the erased concept's seeds, at least 2.
        nll_reference: (|R|,) NLLs of reference seeds from the same model and config, at least 2.
        nll_normal: (n_normal,) NLLs of N(0, I) draws (`normal_nll_set`), at least 2.
        kind: "mofc" or "w1".
    """
    erased, reference, normal = _nll_sets(nll_erased, nll_reference, nll_normal)
    erased_to_normal, reference_to_normal = _distances_to_normal(erased, reference, normal, kind)
    return erased_to_normal / reference_to_normal


def _bootstrap(
    erased: np.ndarray, reference: np.ndarray, normal: np.ndarray, kind: str,
    samples: int, confidence: float, seed: int,
) -> tuple[float, float]:
    if samples == 0:
        return math.nan, math.nan
    distance = distance_function(kind)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(samples):
        # 1. resample each set with replacement, at its own size, in the order E, R, N
        e = erased[rng.integers(0, erased.size, erased.size)]
        r = reference[rng.integers(0, reference.size, reference.size)]
        n = normal[rng.integers(0, normal.size, normal.size)]
        # 2. d_N of the resample; a zero denominator leaves d_N undefined, so skip that resample
        denominator = distance(r, n)
        if denominator > 0.0:
            values.append(distance(e, n) / denominator)
    if not values:
        return math.nan, math.nan
    # 3. percentile interval
    low, high = np.quantile(np.asarray(values), [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    return float(low), float(high)


def check_bootstrap_arguments(samples: int, confidence: float, seed: int) -> None:
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 0:
        raise InputError(f"bootstrap samples: expected an int >= 0, got {samples!r}")
    if not isinstance(confidence, (int, float)) or not 0.0 < confidence < 1.0:
        raise InputError(f"confidence: expected a number in (0, 1), got {confidence!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputError(f"seed: expected an int, got {seed!r}")


def bootstrap_interval(
    nll_erased: ArrayLike, nll_reference: ArrayLike, nll_normal: ArrayLike, kind: DistanceKind,
    samples: int, confidence: float, seed: int,
) -> tuple[float, float]:
    """Percentile bootstrap interval of d_N, resampling E, R and N with replacement.

    Draws come from `numpy.random.default_rng(seed)`. Resamples with D(R*, N*) == 0 are skipped.

    Returns:
        (low, high), the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of the
        resampled d_N; (nan, nan) when `samples` is 0 (or no resample had a nonzero denominator).
    """
    check_bootstrap_arguments(samples, confidence, seed)
    erased, reference, normal = _nll_sets(nll_erased, nll_reference, nll_normal)
    distance_function(kind)
    return _bootstrap(erased, reference, normal, kind, samples, confidence, seed)


@dataclass(frozen=True)
class MemoryDistanceResult:
    """d_N with everything SPEC 5 asks to report beside it.

    `ci_low` / `ci_high` are nan when the bootstrap is off (`bootstrap_samples` = 0).
    """

    value: float
    ci_low: float
    ci_high: float
    confidence: float
    kind: DistanceKind
    n_erased: int
    n_reference: int
    n_normal: int
    bootstrap_samples: int
    distance_erased_normal: float
    distance_reference_normal: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: non-finite floats become the strings "nan", "inf" or "-inf"
        (`float()` reads them back), so no information is lost and strict JSON parsers accept it."""
        return {
            key: (str(value) if isinstance(value, float) and not math.isfinite(value) else value)
            for key, value in dataclasses.asdict(self).items()
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False)


def memory_distance(
    nll_erased: ArrayLike,
    nll_reference: ArrayLike,
    nll_normal: ArrayLike,
    kind: DistanceKind = "mofc",
    bootstrap_samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> MemoryDistanceResult:
    """d_N(E, R) with its bootstrap interval and set sizes; the functional twin of `MemoryDistance`."""
    check_bootstrap_arguments(bootstrap_samples, confidence, seed)
    erased, reference, normal = _nll_sets(nll_erased, nll_reference, nll_normal)
    erased_to_normal, reference_to_normal = _distances_to_normal(erased, reference, normal, kind)
    ci_low, ci_high = _bootstrap(erased, reference, normal, kind, bootstrap_samples, confidence, seed)
    return MemoryDistanceResult(
        value=erased_to_normal / reference_to_normal,
        ci_low=ci_low,
        ci_high=ci_high,
        confidence=float(confidence),
        kind=kind,
        n_erased=int(erased.size),
        n_reference=int(reference.size),
        n_normal=int(normal.size),
        bootstrap_samples=bootstrap_samples,
        distance_erased_normal=erased_to_normal,
        distance_reference_normal=reference_to_normal,
    )
