"""The memory score: does the model still hold seeds that regenerate the concept's images?

d_N (SPEC 5) compares the *spread* of seed NLLs and ignores both the direction of a shift and
whether the seeds reconstruct anything: a model that never learned a concept can get d_N far
from 1 in either direction. The memory score asks per image the question MoFC's memories
answer, "is there a seed that regenerates this image and is as likely as the seeds of content
the model knows?", and averages the answer over the concept's images.

Notation, all from one model and one probe config (the same E, R, N as d_N):
    l_i, p_i      NLL of image i's seed and its reconstruction PSNR (dB), i in E
    mu_R, mu_N    mean NLL of the reference seeds R and of the N(0, I) draws N
    P_R           median reconstruction PSNR of R (what this model reaches on content it knows)
    u_i = (mu_N - l_i) / (mu_N - mu_R)     likelihood position: 1 = as likely as known content,
                                           0 = as likely as a random draw
    g_i = 1[p_i >= P_R - psnr_margin]      the seed regenerates the image (0 when diverged)
    m_i = g_i * clip(u_i, 0, 1)            the image's memory
    M   = mean_i m_i                       the memory score, in [0, 1]
M near 1: the model remembers the concept like content it knows; M near 0: no seed both
regenerates the images and is likelier than a random draw, as for a model that never saw the
concept (or for images no model of this world can make). The interval is a percentile bootstrap
that resamples E, R and N together (the anchors move with the resample).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import InputError, InsufficientDataError

# A reconstruction counts when it is within this many dB of the median PSNR the same model
# reaches on its reference images: 5 dB is an MSE about 3x the reference's. (The world model
# reaches about 31 dB on known shapes; never-seen stars reconstruct at about 17 dB.)
DEFAULT_PSNR_MARGIN_DB = 5.0


@dataclass(frozen=True)
class MemoryScoreResult:
    """The memory score M with its interval, the anchors it used and each image's memory."""

    value: float
    ci_low: float
    ci_high: float
    confidence: float
    bootstrap_samples: int
    n_images: int
    n_reconstructed: int
    n_diverged: int
    nll_reference_mean: float
    nll_normal_mean: float
    psnr_reference_median: float
    psnr_margin_db: float
    per_image: tuple[float, ...]

    @property
    def psnr_cut(self) -> float:
        return self.psnr_reference_median - self.psnr_margin_db

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["per_image"] = list(self.per_image)
        data["psnr_cut"] = self.psnr_cut
        return {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _array(values: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"{name}: expected a 1-D sequence of numbers, got {type(values).__name__}") from error
    if array.ndim != 1:
        raise InputError(f"{name}: expected a 1-D sequence, got shape {array.shape}")
    return array


def _anchors(nll_reference: np.ndarray, psnr_reference: np.ndarray, nll_normal: np.ndarray) -> tuple[float, float, float]:
    return float(nll_reference.mean()), float(nll_normal.mean()), float(np.median(psnr_reference))


def image_memory(
    nll: np.ndarray, psnr: np.ndarray, nll_reference_mean: float, nll_normal_mean: float, psnr_cut: float
) -> np.ndarray:
    """m_i = 1[p_i >= cut] * clip((mu_N - l_i) / (mu_N - mu_R), 0, 1); nan inputs (diverged) give 0."""
    scale = nll_normal_mean - nll_reference_mean
    if not scale > 0:
        return np.full(nll.shape, np.nan)
    position = np.clip((nll_normal_mean - nll) / scale, 0.0, 1.0)
    regenerates = psnr >= psnr_cut  # nan compares False: a diverged image regenerates nothing
    return np.where(regenerates & np.isfinite(position), position, 0.0)


def memory_score(
    nll_erased: Sequence[float] | torch.Tensor,
    psnr_erased: Sequence[float] | torch.Tensor,
    nll_reference: Sequence[float] | torch.Tensor,
    psnr_reference: Sequence[float] | torch.Tensor,
    nll_normal: Sequence[float] | torch.Tensor,
    psnr_margin_db: float = DEFAULT_PSNR_MARGIN_DB,
    bootstrap_samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> MemoryScoreResult:
    """The memory score M of the concept's images E against R and N (module docstring).

    Args:
        nll_erased / psnr_erased: (|E|,) per-image seed NLL and PSNR (dB); nan marks an image
            whose inversion (NLL) or reconstruction (PSNR) diverged: it holds no memory.
        nll_reference / psnr_reference: (|R|,) the same for the reference images (nan ones are
            left out of the anchors); at least 2 finite.
        nll_normal: (n,) NLLs of N(0, I) draws of z_T's shape; at least 2.
        psnr_margin_db: g_i's margin below the reference's median PSNR.
        bootstrap_samples / confidence / seed: the percentile interval (0 samples: nan bounds).
    """
    nll_e, psnr_e = _array(nll_erased, "nll_erased"), _array(psnr_erased, "psnr_erased")
    if nll_e.shape != psnr_e.shape or nll_e.size == 0:
        raise InputError(f"nll_erased and psnr_erased: expected the same non-zero length, got {nll_e.size} and {psnr_e.size}")
    nll_r, psnr_r = _array(nll_reference, "nll_reference"), _array(psnr_reference, "psnr_reference")
    if nll_r.shape != psnr_r.shape:
        raise InputError(f"nll_reference and psnr_reference: expected the same length, got {nll_r.size} and {psnr_r.size}")
    known = np.isfinite(nll_r) & ~np.isnan(psnr_r)
    nll_r, psnr_r = nll_r[known], psnr_r[known]
    normal = _array(nll_normal, "nll_normal")
    if nll_r.size < 2 or normal.size < 2 or not np.isfinite(normal).all():
        raise InsufficientDataError(
            f"the memory score needs at least 2 reference images whose probe did not diverge and 2 finite N-set "
            f"NLLs; got {nll_r.size} and {int(np.isfinite(normal).sum())}"
        )
    if not (math.isfinite(psnr_margin_db) and psnr_margin_db >= 0):
        raise InputError(f"psnr_margin_db: got {psnr_margin_db!r}; expected a number >= 0")
    mu_r, mu_n, p_r = _anchors(nll_r, psnr_r, normal)
    if not mu_n > mu_r:
        raise InsufficientDataError(
            f"the memory score is undefined: the reference seeds' mean NLL ({mu_r:.1f}) is not below the N set's "
            f"({mu_n:.1f}), so this probe cannot tell seeds of known content from random draws"
        )
    per_image = image_memory(nll_e, psnr_e, mu_r, mu_n, p_r - psnr_margin_db)
    low, high = _bootstrap(nll_e, psnr_e, nll_r, psnr_r, normal, psnr_margin_db, bootstrap_samples, confidence, seed)
    diverged = ~np.isfinite(nll_e) | np.isnan(psnr_e)
    return MemoryScoreResult(
        value=float(per_image.mean()),
        ci_low=low,
        ci_high=high,
        confidence=float(confidence),
        bootstrap_samples=int(bootstrap_samples),
        n_images=int(nll_e.size),
        n_reconstructed=int((psnr_e >= p_r - psnr_margin_db).sum()),
        n_diverged=int(diverged.sum()),
        nll_reference_mean=mu_r,
        nll_normal_mean=mu_n,
        psnr_reference_median=p_r,
        psnr_margin_db=float(psnr_margin_db),
        per_image=tuple(float(v) for v in per_image),
    )


def _bootstrap(
    nll_e: np.ndarray, psnr_e: np.ndarray, nll_r: np.ndarray, psnr_r: np.ndarray, normal: np.ndarray,
    margin: float, samples: int, confidence: float, seed: int,
) -> tuple[float, float]:
    if samples == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(samples):
        # 1. resample E, R and N with replacement, each at its own size, in that order
        e = rng.integers(0, nll_e.size, nll_e.size)
        r = rng.integers(0, nll_r.size, nll_r.size)
        n = normal[rng.integers(0, normal.size, normal.size)]
        # 2. the anchors move with the resample; a resample whose R is not likelier than N is skipped
        mu_r, mu_n, p_r = _anchors(nll_r[r], psnr_r[r], n)
        if mu_n > mu_r:
            values.append(image_memory(nll_e[e], psnr_e[e], mu_r, mu_n, p_r - margin).mean())
    if not values:
        return math.nan, math.nan
    # 3. percentile interval
    low, high = np.quantile(np.asarray(values), [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    return float(low), float(high)
