"""The memory score: does the model still hold seeds that regenerate the concept's images?

d_N (SPEC 5) compares the *spread* of seed NLLs and ignores both the direction of a shift and
whether the seeds reconstruct anything: a model that never learned a concept can get d_N far
from 1 in either direction. The memory score asks per image the question MoFC's memories
answer, "is there a seed that regenerates this image and is as likely as the seeds of content
the model knows?", and averages the answer over the concept's images.

Notation, all from one model and one probe config (the same E, R, N as d_N):
    l_i, p_i      NLL of image i's seed and its reconstruction PSNR (dB), i in E
    mu_N, s_N     mean and standard deviation (ddof 1) of the NLLs of the N(0, I) draws N
    tau_i = (l_i - mu_N) / s_N              the seed's place in N's NLL distribution
    t_i = 1[|tau_i| <= k]                   the seed is *typical*: where N(0, I) draws fall
                                            (k = typical_sigmas, default 6)
    mu_R          mean NLL of R's typical seeds (content the model knows)
    P_R           median reconstruction PSNR of R (what this model reaches on content it knows)
    u_i = (mu_N - l_i) / (mu_N - mu_R)     likelihood position: 1 = as likely as known content,
                                           0 = as likely as a random draw
    g_i = 1[p_i >= P_R - psnr_margin]      the seed regenerates the image (0 when diverged)
    m_i = g_i * t_i * clip(u_i, 0, 1)      the image's memory
    M   = mean_i m_i                       the memory score, in [0, 1]
M near 1: the model remembers the concept like content it knows; M near 0: no seed both
regenerates the images and is likelier than a random draw, as for a model that never saw the
concept (or for images no model of this world can make).

Why t_i: low NLL means high density, not a seed a sampler draws. In d dimensions a draw from
N(0, I) has ||z||^2 close to d (NLL spread sqrt(d / 2)); a seed far below that (tau << 0) is
atypically small and no sampler ever lands there. A UNet that predicts eps = 0 inverts every
image to its latent shrunk toward zero (tau about -sqrt(d / 2)) and reconstructs it exactly: without
t_i every image would read as remembered. A seed far above (tau >> 0) is already u_i <= 0.

M is undefined (`InsufficientDataError`, never a number) when fewer than 2 reference seeds are
finite and typical, when fewer than half of R's finite seeds are typical (the model does not reach
even the content it knows from seeds a sampler draws: the probe cannot read memory in it), or when
R's typical seeds are no likelier than N's draws. The interval is a percentile bootstrap that
resamples E, R and N together (the anchors move with the resample).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..config import DEFAULT_TYPICAL_SIGMAS
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
    nll_normal_std: float = math.nan
    typical_sigmas: float = DEFAULT_TYPICAL_SIGMAS
    n_atypical: int = 0
    reference_typical: int = 0
    reference_found: int = 0

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


def _anchors(nll_reference: np.ndarray, psnr_reference: np.ndarray, nll_normal: np.ndarray) -> tuple[float, float, float, float]:
    """(mu_R, mu_N, P_R, s_N) from R's typical seeds and the N set (callers pass typical R only)."""
    return (float(nll_reference.mean()), float(nll_normal.mean()), float(np.median(psnr_reference)),
            float(nll_normal.std(ddof=1)))


def typical(nll: np.ndarray, nll_normal_mean: float, nll_normal_std: float, typical_sigmas: float) -> np.ndarray:
    """t_i = 1[|l_i - mu_N| <= k s_N]: the seed lies where N(0, I) draws fall (nan: False)."""
    return np.abs(nll - nll_normal_mean) <= typical_sigmas * nll_normal_std


def image_memory(
    nll: np.ndarray, psnr: np.ndarray, nll_reference_mean: float, nll_normal_mean: float, psnr_cut: float,
    nll_normal_std: float, typical_sigmas: float = DEFAULT_TYPICAL_SIGMAS,
) -> np.ndarray:
    """m_i = 1[p_i >= cut] * 1[|tau_i| <= k] * clip((mu_N - l_i) / (mu_N - mu_R), 0, 1); nan inputs
    (diverged) give 0."""
    scale = nll_normal_mean - nll_reference_mean
    if not scale > 0:
        return np.full(nll.shape, np.nan)
    position = np.clip((nll_normal_mean - nll) / scale, 0.0, 1.0)
    regenerates = psnr >= psnr_cut  # nan compares False: a diverged image regenerates nothing
    counts = regenerates & typical(nll, nll_normal_mean, nll_normal_std, typical_sigmas)
    return np.where(counts & np.isfinite(position), position, 0.0)


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
    typical_sigmas: float = DEFAULT_TYPICAL_SIGMAS,
) -> MemoryScoreResult:
    """The memory score M of the concept's images E against R and N (module docstring).

    Args:
        nll_erased / psnr_erased: (|E|,) per-image seed NLL and PSNR (dB); nan marks an image
            whose inversion (NLL) or reconstruction (PSNR) diverged: it holds no memory.
        nll_reference / psnr_reference: (|R|,) the same for the reference images; the anchors use
            the finite, typical ones (at least 2, and at least half of the finite ones).
        nll_normal: (n,) NLLs of N(0, I) draws of z_T's shape; at least 2.
        psnr_margin_db: g_i's margin below the reference's median PSNR.
        bootstrap_samples / confidence / seed: the percentile interval (0 samples: nan bounds).
        typical_sigmas: k of the typical band |tau| <= k (> 0).
    Raises:
        InsufficientDataError: M is undefined for these sets; the message says why and what it means.
    """
    nll_e, psnr_e = _array(nll_erased, "nll_erased"), _array(psnr_erased, "psnr_erased")
    if nll_e.shape != psnr_e.shape or nll_e.size == 0:
        raise InputError(f"nll_erased and psnr_erased: expected the same non-zero length, got {nll_e.size} and {psnr_e.size}")
    nll_r, psnr_r = _array(nll_reference, "nll_reference"), _array(psnr_reference, "psnr_reference")
    if nll_r.shape != psnr_r.shape:
        raise InputError(f"nll_reference and psnr_reference: expected the same length, got {nll_r.size} and {psnr_r.size}")
    if not (math.isfinite(psnr_margin_db) and psnr_margin_db >= 0):
        raise InputError(f"psnr_margin_db: got {psnr_margin_db!r}; expected a number >= 0")
    if not (isinstance(typical_sigmas, (int, float)) and math.isfinite(typical_sigmas) and typical_sigmas > 0):
        raise InputError(f"typical_sigmas: got {typical_sigmas!r}; expected a number > 0")
    normal = _array(nll_normal, "nll_normal")
    known = np.isfinite(nll_r) & ~np.isnan(psnr_r)
    if known.sum() < 2 or normal.size < 2 or not np.isfinite(normal).all():
        raise InsufficientDataError(
            f"the memory score needs at least 2 reference images whose probe did not diverge and 2 finite N-set "
            f"NLLs; got {int(known.sum())} and {int(np.isfinite(normal).sum())}"
        )
    mu_n, s_n = float(normal.mean()), float(normal.std(ddof=1))
    typical_r = known & typical(nll_r, mu_n, s_n, typical_sigmas)
    if typical_r.sum() < 2 or 2 * typical_r.sum() < known.sum():
        taus = ", ".join(f"{(v - mu_n) / s_n:+.1f}" for v in nll_r[known][:6])
        raise InsufficientDataError(
            f"the memory score is undefined: only {int(typical_r.sum())} of {int(known.sum())} reference seeds are "
            f"typical N(0, I) draws (|tau| <= {typical_sigmas:g} N-set standard deviations; tau = {taus}), so this "
            f"model does not regenerate even the content it knows from seeds a sampler draws and the probe cannot "
            f"read memory in it (a degenerate UNet, e.g. one that predicts eps = 0, does this)"
        )
    nll_r, psnr_r = nll_r[typical_r], psnr_r[typical_r]
    mu_r, _, p_r, _ = _anchors(nll_r, psnr_r, normal)
    if not mu_n > mu_r:
        raise InsufficientDataError(
            f"the memory score is undefined: the reference seeds' mean NLL ({mu_r:.1f}) is not below the N set's "
            f"({mu_n:.1f}), so this probe cannot tell seeds of known content from random draws"
        )
    per_image = image_memory(nll_e, psnr_e, mu_r, mu_n, p_r - psnr_margin_db, s_n, typical_sigmas)
    low, high = _bootstrap(nll_e, psnr_e, nll_r, psnr_r, normal, psnr_margin_db, typical_sigmas, bootstrap_samples,
                           confidence, seed)
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
        nll_normal_std=s_n,
        typical_sigmas=float(typical_sigmas),
        n_atypical=int((np.isfinite(nll_e) & ~typical(nll_e, mu_n, s_n, typical_sigmas)).sum()),
        reference_typical=int(typical_r.sum()),
        reference_found=int(known.sum()),
    )


def _bootstrap(
    nll_e: np.ndarray, psnr_e: np.ndarray, nll_r: np.ndarray, psnr_r: np.ndarray, normal: np.ndarray,
    margin: float, typical_sigmas: float, samples: int, confidence: float, seed: int,
) -> tuple[float, float]:
    """Percentile interval of M; R here is the typical reference seeds the point value used."""
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
        mu_r, mu_n, p_r, s_n = _anchors(nll_r[r], psnr_r[r], n)
        if mu_n > mu_r:
            values.append(image_memory(nll_e[e], psnr_e[e], mu_r, mu_n, p_r - margin, s_n, typical_sigmas).mean())
    if not values:
        return math.nan, math.nan
    # 3. percentile interval
    low, high = np.quantile(np.asarray(values), [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    return float(low), float(high)
