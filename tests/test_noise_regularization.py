"""SPEC 2.5: closed-form gradients equal autograd of the SPEC losses; draws are as specified."""

from __future__ import annotations

import pytest
import torch

from unlearn_guard.kernels.noise_regularization import (
    autocorr_grad,
    autocorr_levels,
    autocorr_loss,
    draw_roll_offsets,
    noise_regularization,
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


def _released_draws_one_at_a_time(generator, num_reg_steps, num_ac_rolls, channels, height, width):
    """The released loop nest, one `randint(0, size // 2, (1,))` per value: outer -> roll -> channel -> level."""
    sizes = [h for h, _ in autocorr_levels(height, width)]
    table = torch.empty(num_reg_steps, num_ac_rolls, channels, len(sizes), dtype=torch.long)
    for outer in range(num_reg_steps):
        for roll in range(num_ac_rolls):
            for channel in range(channels):
                for level, size in enumerate(sizes):
                    table[outer, roll, channel, level] = torch.randint(0, size // 2, (1,), generator=generator)
    return table


@pytest.mark.parametrize("height,width", [(64, 64), (32, 32), (96, 96), (40, 24), (8, 8)])
def test_offsets_follow_the_released_nesting(height, width):
    # 64x64 has all four pyramid levels (ranges 32, 16, 8, 4), which an 8x8 latent cannot show:
    # a table drawn level by level has the same count and end state but other values in its slots.
    drawn = torch.Generator().manual_seed(42)
    replay = torch.Generator().manual_seed(42)
    for _ in range(3):  # consecutive calls continue the same stream
        table = draw_roll_offsets([drawn], 4, 5, 4, height, width)[0]
        assert torch.equal(table, _released_draws_one_at_a_time(replay, 4, 5, 4, height, width))
    assert torch.equal(drawn.get_state(), replay.get_state())


def test_level_major_draws_would_fail_the_nesting_check():
    # Negative control: the old layout (one (outer, rolls, C) block per level) uses the same count
    # and leaves the same end state, but most values differ from the released order.
    replay = torch.Generator().manual_seed(42)
    released = _released_draws_one_at_a_time(replay, 4, 5, 4, 64, 64)
    level_major = torch.Generator().manual_seed(42)
    blocks = [torch.randint(0, h // 2, (4, 5, 4), generator=level_major) for h, _ in autocorr_levels(64, 64)]
    assert torch.equal(level_major.get_state(), replay.get_state())
    assert (torch.stack(blocks, dim=-1) == released).float().mean() < 0.5


def test_draw_count_and_range_per_call_sd14_shape():
    # SPEC 2.5 at SD 1.4 shapes: 4 outer x 5 rolls x 4 channels x 4 levels = 320 draws per call.
    g = torch.Generator().manual_seed(7)
    offsets = draw_roll_offsets([g], 4, 5, 4, 64, 64)
    assert offsets.shape == (1, 4, 5, 4, 4) and offsets.numel() == 320
    for level, (h, _) in enumerate(autocorr_levels(64, 64)):
        values = offsets[..., level]
        assert values.min() >= 0 and values.max() < h // 2
        assert values.max() >= h // 4  # the whole range is used, not the coarsest level's
    # The generator advanced by exactly those draws: 320 single draws land in the same state.
    replay = torch.Generator().manual_seed(7)
    for _ in range(320):
        torch.randint(0, 4, (1,), generator=replay)
    assert torch.equal(g.get_state(), replay.get_state())


def test_roll_zero_is_drawn():
    # r = 0 is allowed (SPEC): at the 8x8 level r ~ U{0..3}, so 0 shows up among many draws.
    offsets = draw_roll_offsets([torch.Generator().manual_seed(0)], 4, 5, 4, 8, 8)
    assert (offsets == 0).any() and (offsets == 3).any()


def test_fused_ops_keep_the_input_memory_layout():
    # A channels_last estimate stays channels_last, so the next UNet call rounds as the released
    # code's does (its autograd gradients keep the parameter's layout).
    from unlearn_guard.kernels.renoise_update import renoise_update

    g = torch.Generator().manual_seed(3)
    eps = torch.randn(2, 4, 16, 16, generator=g).contiguous(memory_format=torch.channels_last)
    target = torch.randn(2, 4, 16, 16, generator=g)
    offsets = draw_roll_offsets([torch.Generator().manual_seed(i) for i in range(2)], 4, 5, 4, 16, 16)
    out = noise_regularization(eps, target, offsets, backend="torch")
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    # Same values up to the reductions' summation order, which follows the layout.
    torch.testing.assert_close(out, noise_regularization(eps.contiguous(), target, offsets, backend="torch"))
    update = renoise_update(eps, out, step_coefficients=(1.01, -0.02), backend="torch")
    assert update.z_next.is_contiguous(memory_format=torch.channels_last)
    assert noise_regularization(eps.contiguous(), target, offsets, backend="torch").is_contiguous()
