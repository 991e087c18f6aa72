"""Optional: the Fréchet Inception Distance between two image sets, by torchmetrics.

Not part of the utility check's verdict. torchmetrics' `FrechetInceptionDistance` needs the
`torch-fidelity` package and the FID Inception-v3 weights, which torch-fidelity downloads from
GitHub on first use (about 92 MB); neither ships with unlearn_guard. FID is biased upwards at small
sample sizes (papers use 10k-30k images), so compare it only between runs of the same size.
"""

from __future__ import annotations

import torch

from ..errors import ModelError

FID_NEEDS = ("FID needs the torch-fidelity package (pip install torch-fidelity) and the FID Inception-v3 "
             "weights, which torch-fidelity downloads from github.com on first use (about 92 MB)")


@torch.no_grad()
def frechet_distance(images: torch.Tensor, reference: torch.Tensor, feature: int = 2048) -> float:
    """FID between images (N, 3, H, W) in [0, 1] and `reference` (M, 3, H, W) in [0, 1] (e.g. the
    base model's generations of the same prompts). ModelError when torch-fidelity or the weights
    are not available."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance

        metric = FrechetInceptionDistance(feature=feature, normalize=True)
    except (ImportError, ModuleNotFoundError, OSError, RuntimeError) as error:
        raise ModelError(f"{FID_NEEDS}; not available here ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''})") from None
    metric.update(reference.float().clamp(0, 1), real=True)
    metric.update(images.float().clamp(0, 1), real=False)
    return float(metric.compute())
