"""GPU-only checks of the fast path (marker `gpu`; they need CUDA and are skipped without it).

Everything numeric is also checked on CPU (kernels under the interpreter, the end-to-end
comparison in test_fast_path.py); what only a GPU can show is that the step loop never waits
on the host and that `auto` picks the compiled kernels.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from unlearn_guard.config import PRESETS
from unlearn_guard.inversion.renoise import Conditioning, NoisePredictor, draw_inversion_offsets, renoise_step
from unlearn_guard.schedule import ddim_schedule
from unlearn_guard.kernels.dispatch import resolve_backend
from unlearn_guard.world import load_world_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_auto_backend_is_triton_on_cuda():
    assert resolve_backend("auto", torch.zeros(1, device="cuda"), op="x") == "triton"


def test_mofc_step_loop_never_synchronises_with_the_host():
    model = load_world_model().to(device="cuda")
    model.unet.to(torch.bfloat16)
    model.text_encoder.to(torch.bfloat16)
    config = dataclasses.replace(PRESETS["mofc"].inversion, num_steps=10)
    schedule = ddim_schedule(model.scheduler_config, config.num_steps)
    generators = [torch.Generator().manual_seed(i) for i in range(4)]
    z0 = torch.randn(4, 4, 8, 8, device="cuda")
    conditioning = Conditioning(model.encode_prompts(["a circle"] * 4))
    offsets = draw_inversion_offsets(config, schedule, generators, z0.shape[1:], z0.device)
    predict = NoisePredictor(model, backend="auto")
    z = z0
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any implicit host sync raises
    try:
        for index, timestep in enumerate(schedule.timesteps):
            alpha_t, alpha_s = schedule.alphas_at(index)
            z = renoise_step(predict, z, z0, timestep, alpha_t, alpha_s, conditioning, config, offsets[index])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(z).all()
