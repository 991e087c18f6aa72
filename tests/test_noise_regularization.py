"""SPEC 2.5: closed-form gradients equal autograd of the SPEC losses; draws are as specified."""

from __future__ import annotations

import pytest
import torch

from unlearn_guard.kernels.noise_regularization import (
    autocorr_grad,
    autocorr_levels,
    autocorr_loss,
    draw_roll_offsets,
    noise_regularization_autograd,
    noise_regularization_torch,
    patch_kl_grad,
    patch_kl_loss,
)

SHAPES = [(1, 4, 8, 8), (2, 4, 16, 16), (3, 4, 12, 10), (2, 4, 9, 13), (1, 4, 64, 64)]


def _inputs(shape, seed):
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(shape, generator=g, dtype=torch.float64)
    eps_opt = 0.7 * torch.randn(shape, generator=g, dtype=torch.float64) + 0.1
    gens = [torch.Generator().manual_seed(seed * 100 + i) for i in range(shape[0])]
    return eps, eps_opt, gens


@pytest.mark.parametrize("shape", SHAPES)
def test_patch_kl_grad_matches_autograd(shape):
    eps, eps_opt, _ = _inputs(shape, 1)
    x = eps.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(patch_kl_loss(x, eps_opt).sum(), x)
    got = patch_kl_grad(eps, eps_opt)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    # Negative control: a one-entry perturbation is caught at this tolerance.
    bad = got.clone()
    bad.view(-1)[3] += 1e-6
    assert not torch.allclose(bad, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_autocorr_grad_matches_autograd(shape):
    eps, _, gens = _inputs(shape, 2)
    offsets = draw_roll_offsets(gens, 1, 1, shape[1], shape[2], shape[3])[:, 0, 0]  # (B, C, L)
    x = eps.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(autocorr_loss(x, offsets).sum(), x)
    got = autocorr_grad(eps, offsets)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-14)
    bad = got.clone()
    bad.view(-1)[0] *= 1.0001
    assert not torch.allclose(bad, expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("shape", [(2, 4, 8, 8), (1, 4, 32, 32), (2, 4, 12, 20)])
def test_full_regularization_matches_released_autograd_loop(shape):
    eps, eps_opt, gens = _inputs(shape, 3)
    offsets = draw_roll_offsets(gens, 4, 5, *shape[1:])
    got = noise_regularization_torch(eps, eps_opt, offsets)
    expected = noise_regularization_autograd(eps, eps_opt, offsets)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-11)
    assert (got - eps).abs().max() > 1e-3  # it really changed the estimate


def test_float32_matches_float64_reference():
    eps, eps_opt, gens = _inputs((3, 4, 16, 16), 4)
    offsets = draw_roll_offsets(gens, 4, 5, 4, 16, 16)
    ref = noise_regularization_torch(eps, eps_opt, offsets)
    got = noise_regularization_torch(eps.float(), eps_opt.float(), offsets)
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-5)


def test_batch_equals_singles():
    eps, eps_opt, gens = _inputs((3, 4, 16, 16), 5)
    offsets = draw_roll_offsets(gens, 4, 5, 4, 16, 16)
    batched = noise_regularization_torch(eps, eps_opt, offsets)
    for b in range(3):
        single = noise_regularization_torch(eps[b : b + 1], eps_opt[b : b + 1], offsets[b : b + 1])
        torch.testing.assert_close(batched[b : b + 1], single, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "height,width,expected",
    [(64, 64, [(64, 64), (32, 32), (16, 16), (8, 8)]), (8, 8, [(8, 8)]), (4, 4, [(4, 4)]), (20, 12, [(20, 12), (10, 6), (5, 3)])],
)
def test_autocorr_levels(height, width, expected):
    assert autocorr_levels(height, width) == expected


def test_latent_too_small_is_a_clear_error():
    with pytest.raises(ValueError, match="too small"):
        autocorr_levels(1, 1)


def test_draw_count_and_range_per_call_sd14_shape():
    # SPEC 2.5 at SD 1.4 shapes: 4 outer x 5 rolls x 4 channels x 4 levels = 320 draws per call.
    g = torch.Generator().manual_seed(7)
    offsets = draw_roll_offsets([g], 4, 5, 4, 64, 64)
    assert offsets.shape == (1, 4, 5, 4, 4) and offsets.numel() == 320
    for level, (h, _) in enumerate(autocorr_levels(64, 64)):
        values = offsets[..., level]
        assert values.min() >= 0 and values.max() < h // 2
    # The generator advanced by exactly those draws: replaying them one by one lands in the same state.
    replay = torch.Generator().manual_seed(7)
    for h, _ in autocorr_levels(64, 64):
        torch.randint(0, h // 2, (4, 5, 4), generator=replay)
    assert torch.equal(g.get_state(), replay.get_state())


def test_roll_zero_is_drawn():
    # r = 0 is allowed (SPEC): at the 8x8 level r ~ U{0..3}, so 0 shows up among many draws.
    offsets = draw_roll_offsets([torch.Generator().manual_seed(0)], 4, 5, 4, 8, 8)
    assert (offsets == 0).any() and (offsets == 3).any()
