"""SPEC 1: the DDIM schedule comes from the model's scheduler config; the inverse step is exact."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler

from unlearn_guard.schedule import ddim_schedule, ddim_step, inverse_ddim_step
from unlearn_guard.models.tiny import SD14_SCHEDULER_CONFIG


@pytest.fixture(scope="module")
def sd14():
    return ddim_schedule(SD14_SCHEDULER_CONFIG, 50)


def test_sd14_timesteps_and_edges(sd14):
    assert sd14.timesteps == tuple(range(1, 1000, 20))  # 1, 21, ..., 981
    assert sd14.sampling_timesteps[0] == 981 and sd14.sampling_timesteps[-1] == 1
    assert sd14.final_alpha_prod == pytest.approx(0.99915, abs=5e-6)  # abar[0], not 1
    # The first inversion step starts from abar[0]; every other from abar[t - 20].
    assert float(sd14.alpha_prod_prev[0]) == pytest.approx(sd14.final_alpha_prod)
    assert float(sd14.alpha_prod_prev[1]) == pytest.approx(float(sd14.alpha_prod[0]))
    assert sum(t < 250 for t in sd14.timesteps) == 13


def test_schedule_matches_diffusers_alphas(sd14):
    ref = DDIMScheduler.from_config({k: v for k, v in SD14_SCHEDULER_CONFIG.items() if k != "_class_name"})
    for t, a in zip(sd14.timesteps, sd14.alpha_prod):
        assert float(a) == pytest.approx(float(ref.alphas_cumprod[t]), rel=1e-7)


def test_schedule_ignores_clip_sample_of_config():
    config = dict(SD14_SCHEDULER_CONFIG, clip_sample=True)  # DDIM's default when converting PNDM configs
    schedule = ddim_schedule(config, 10)
    assert schedule.timesteps == tuple(range(1, 1000, 100))


def test_unknown_prediction_type_refused_v_prediction_taken():
    with pytest.raises(ValueError, match="prediction_type='flow'; supported: epsilon, v_prediction, sample"):
        ddim_schedule(dict(SD14_SCHEDULER_CONFIG, prediction_type="flow"), 50)
    assert ddim_schedule(dict(SD14_SCHEDULER_CONFIG, prediction_type="v_prediction"), 50).prediction_type == "v_prediction"


@pytest.mark.parametrize("index", [0, 1, 12, 49])
def test_inverse_step_round_trips_through_diffusers_step(sd14, index):
    g = torch.Generator().manual_seed(index)
    z_s = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    eps = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    a_t, a_s = sd14.alphas_at(index)
    z_t = inverse_ddim_step(z_s, eps, a_t, a_s)
    scheduler = DDIMScheduler.from_config(dict(SD14_SCHEDULER_CONFIG, clip_sample=False))
    scheduler.set_timesteps(50)
    back = scheduler.step(eps, sd14.timesteps[index], z_t, eta=0.0).prev_sample
    # diffusers forms its coefficients from float32 alphas_cumprod: float32 rounding, not float64.
    torch.testing.assert_close(back, z_s, rtol=1e-6, atol=1e-6)
    # Our own forward step inverts our inverse step to float64 rounding.
    torch.testing.assert_close(ddim_step(z_t, eps, a_t, a_s), z_s, rtol=1e-12, atol=1e-12)
    # Negative control: a step with the wrong abar does not round-trip.
    wrong = inverse_ddim_step(z_s, eps, a_t * 0.99, a_s)
    assert not torch.allclose(scheduler.step(eps, sd14.timesteps[index], wrong, eta=0.0).prev_sample, z_s, atol=1e-6)
