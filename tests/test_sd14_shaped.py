"""Full-size check: probe runs on the SD 1.4 architecture with random weights, on CPU (about 100 s)."""

from __future__ import annotations

import math

import pytest
import torch

from unlearn_guard import DiffusionModel, InversionConfig, ProbeConfig, probe
from unlearn_guard.models.tiny import build_sd14_shaped_components


@pytest.mark.slow
def test_probe_runs_on_sd14_shaped_model():
    model = DiffusionModel.from_components(**build_sd14_shaped_components(seed=0))
    assert model.resolution == 512 and model.scaling_factor == pytest.approx(0.18215)
    config = ProbeConfig(
        preset="custom",
        inversion=InversionConfig(num_steps=2, renoise_steps=1, early_window=(0, 2), late_window=(0, 2)),
        n_normal=10,
        bootstrap_samples=0,
        progress=False,
    )
    image = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    result = probe(model, image, "a photo of a parachute", config=config, keep_seeds=True)
    assert result.erased.seeds.shape == (1, 4, 64, 64)  # SD 1.4's 16,384-entry seed
    nll = result.erased.images[0].nll
    assert math.isfinite(nll) and nll > 15055.89  # above NLL(zeros) for this shape
    assert result.erased.unet_evaluations == 2 * 3 + 2
    assert math.isfinite(result.erased.images[0].psnr)
