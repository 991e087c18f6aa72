"""Each Triton kernel against its PyTorch reference in float64, on awkward shapes, with negative controls.

On a machine without CUDA the kernels run under TRITON_INTERPRET=1 (set in conftest) on CPU
tensors; with CUDA the same tests run compiled on the GPU (KERNEL_DEVICE).
"""

from __future__ import annotations

import pytest
import torch

from unlearn_guard.errors import InputError
from unlearn_guard.kernels import dispatch as _dispatch
from unlearn_guard.kernels.noise_regularization import (
    MAX_TILE,
    autocorr_levels,
    draw_roll_offsets,
    noise_regularization,
    noise_regularization_autograd,
    noise_regularization_torch,
    noise_regularization_triton,
    triton_supports,
)
from unlearn_guard.kernels.renoise_update import (
    inverse_step_coefficients,
    renoise_update,
    renoise_update_torch,
    renoise_update_triton,
)
from unlearn_guard.kernels.seed_statistics import (
    squared_error,
    squared_error_torch,
    squared_error_triton,
    sum_of_squares,
    sum_of_squares_torch,
    sum_of_squares_triton,
)

from conftest import KERNEL_DEVICE, TOLERANCES



def _randn(shape, seed, scale=1.0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(shape, generator=g, dtype=torch.float64) + shift).float()


def _close(actual: torch.Tensor, expected: torch.Tensor, dtype=torch.float32, scale=1.0) -> bool:
    rtol, atol = TOLERANCES[dtype]
    return torch.allclose(actual.double().cpu(), expected.double().cpu(), rtol=rtol * scale, atol=atol * scale)


# ----------------------------------------------------------------------------- noise regularisation
# (B, C, H, W), outer steps, rolls, lambda_kl, lambda_ac, patch: batch 1, odd sizes, one pyramid
# level (8x8) to four (64x64), no-KL and no-AC variants, another patch size.
REGULARIZATION_CASES = [
    ((1, 4, 8, 8), 4, 5, 0.065, 20.0, 4),
    ((3, 4, 16, 16), 4, 5, 0.065, 20.0, 4),
    ((2, 3, 13, 11), 4, 5, 0.065, 20.0, 4),
    ((2, 4, 20, 12), 2, 3, 0.065, 20.0, 4),
    ((2, 4, 16, 16), 4, 5, 0.0, 20.0, 4),
    ((2, 4, 16, 16), 4, 0, 0.065, 0.0, 4),
    ((2, 4, 10, 10), 3, 2, 0.065, 20.0, 2),
    ((2, 4, 64, 64), 4, 5, 0.065, 20.0, 4),
]


@pytest.mark.parametrize("shape,outer,rolls,lambda_kl,lambda_ac,patch", REGULARIZATION_CASES)
def test_noise_regularization_kernel_matches_float64_reference(shape, outer, rolls, lambda_kl, lambda_ac, patch):
    eps, eps_opt = _randn(shape, 1), _randn(shape, 2, 0.7, 0.1)
    gens = [torch.Generator().manual_seed(10 + i) for i in range(shape[0])]
    if rolls:
        offsets = draw_roll_offsets(gens, outer, rolls, *shape[1:])
    else:
        offsets = torch.zeros((shape[0], outer, 0, shape[1], len(autocorr_levels(*shape[2:]))), dtype=torch.long)
    expected = noise_regularization_torch(eps.double(), eps_opt.double(), offsets, lambda_kl, lambda_ac, 100.0, patch)
    got = noise_regularization_triton(
        eps.to(KERNEL_DEVICE), eps_opt.to(KERNEL_DEVICE), offsets.to(KERNEL_DEVICE), lambda_kl, lambda_ac, 100.0, patch
    )
    assert got.dtype == torch.float32 and got.shape == eps.shape
    assert _close(got, expected)
    assert (expected - eps.double()).abs().max() > 1e-3  # the op really changed the estimate
    # Negative control: one entry off by 1e-3 fails at this tolerance.
    bad = got.clone()
    bad.view(-1)[got.numel() // 2] += 1e-3
    assert not _close(bad, expected)


def test_noise_regularization_kernel_with_other_offsets_differs():
    # The kernel really reads the roll table: another draw gives a result outside the tolerance.
    shape = (2, 4, 16, 16)
    eps, eps_opt = _randn(shape, 3), _randn(shape, 4)
    offsets = draw_roll_offsets([torch.Generator().manual_seed(i) for i in range(2)], 4, 5, 4, 16, 16)
    other = draw_roll_offsets([torch.Generator().manual_seed(i + 7) for i in range(2)], 4, 5, 4, 16, 16)
    expected = noise_regularization_torch(eps.double(), eps_opt.double(), offsets)
    got_other = noise_regularization_triton(eps.to(KERNEL_DEVICE), eps_opt.to(KERNEL_DEVICE), other.to(KERNEL_DEVICE))
    assert not _close(got_other, expected)


def test_noise_regularization_kernel_non_contiguous_input():
    base = _randn((4, 2, 16, 16), 5)  # channels in dim 0: a permuted (non-contiguous) view
    eps = base.permute(1, 0, 2, 3)
    assert not eps.is_contiguous()
    eps_opt = _randn((2, 4, 16, 16), 6)
    offsets = draw_roll_offsets([torch.Generator().manual_seed(i) for i in range(2)], 4, 5, 4, 16, 16)
    expected = noise_regularization_torch(eps.double(), eps_opt.double(), offsets)
    got = noise_regularization_triton(eps.to(KERNEL_DEVICE), eps_opt.to(KERNEL_DEVICE), offsets.to(KERNEL_DEVICE))
    assert _close(got, expected)


def test_noise_regularization_batch_equals_singles_on_the_kernel():
    shape = (3, 4, 16, 16)
    eps, eps_opt = _randn(shape, 7).to(KERNEL_DEVICE), _randn(shape, 8).to(KERNEL_DEVICE)
    offsets = draw_roll_offsets([torch.Generator().manual_seed(i) for i in range(3)], 4, 5, 4, 16, 16).to(KERNEL_DEVICE)
    batched = noise_regularization_triton(eps, eps_opt, offsets)
    for b in range(3):
        single = noise_regularization_triton(eps[b : b + 1], eps_opt[b : b + 1], offsets[b : b + 1])
        assert torch.equal(batched[b : b + 1], single)  # one program per image: bitwise equal


def test_autograd_baseline_equals_reference():
    shape = (2, 4, 16, 16)
    eps, eps_opt = _randn(shape, 9).double(), _randn(shape, 10).double()
    offsets = draw_roll_offsets([torch.Generator().manual_seed(i) for i in range(2)], 4, 5, 4, 16, 16)
    torch.testing.assert_close(
        noise_regularization_autograd(eps, eps_opt, offsets), noise_regularization_torch(eps, eps_opt, offsets),
        rtol=1e-10, atol=1e-12,
    )  # fmt: skip


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda e, o, r: (e[0], o, r), "eps must be a floating"),
        (lambda e, o, r: (e, o[:1], r), "eps_opt must have eps's shape"),
        (lambda e, o, r: (e, o, r.float()), "roll_offsets must be an integer tensor"),
        (lambda e, o, r: (e, o, r[:, :, :, :2]), "roll_offsets must be an integer tensor"),
    ],
)
def test_noise_regularization_bad_input_names_the_argument(change, message):
    eps, eps_opt = _randn((2, 4, 16, 16), 1), _randn((2, 4, 16, 16), 2)
    offsets = draw_roll_offsets([torch.Generator().manual_seed(i) for i in range(2)], 4, 5, 4, 16, 16)
    for backend in ("torch", "triton"):
        with pytest.raises(InputError, match=message):
            noise_regularization(*change(eps, eps_opt, offsets), backend=backend)


def test_tile_limit_is_a_clear_error_and_auto_falls_back():
    assert triton_supports((1, 4, 64, 64)) and not triton_supports((1, 4, 128, 128))
    eps = torch.zeros((1, 4, 128, 128))
    offsets = draw_roll_offsets([torch.Generator().manual_seed(0)], 1, 1, 4, 128, 128)
    with pytest.raises(InputError, match=f"exceeds the fused kernel's tile \\({MAX_TILE}"):
        noise_regularization_triton(eps, eps, offsets)


# ----------------------------------------------------------------------------- ReNoise update
UPDATE_CASES = [  # (shape, with CFG, avg_index, with step)
    ((2, 4, 8, 8), False, None, True),
    ((2, 4, 8, 8), True, None, True),
    ((1, 4, 9, 7), True, 0, False),
    ((3, 4, 8, 8), False, 3, True),
    ((5, 3, 33, 17), True, 2, True),
]


@pytest.mark.parametrize("shape,cfg,avg_index,step", UPDATE_CASES)
def test_renoise_update_kernel_matches_float64_reference(shape, cfg, avg_index, step):
    z, cond, uncond, avg = (_randn(shape, s) for s in (11, 12, 13, 14))
    coefficients = inverse_step_coefficients(0.6, 0.9) if step else None
    expected = renoise_update_torch(
        z.double(), cond.double(), uncond.double() if cfg else None, 7.5, avg.double() if avg_index else None,
        avg_index, coefficients,
    )  # fmt: skip
    device = lambda t: t.to(KERNEL_DEVICE)  # noqa: E731
    got = renoise_update_triton(
        device(z), device(cond), device(uncond) if cfg else None, 7.5, device(avg) if avg_index else None,
        avg_index, coefficients,
    )  # fmt: skip
    for name, g, e in zip(("eps", "eps_avg", "z_next"), got, expected):
        assert (g is None) == (e is None), name
        if e is not None:
            assert g.dtype == torch.float32
            assert _close(g, e), name
            bad = g.clone()
            bad.view(-1)[-1] += 1e-3
            assert not _close(bad, e), f"negative control for {name}"


def test_renoise_update_non_contiguous_and_bf16_inputs():
    z = _randn((4, 2, 8, 8), 15).permute(1, 0, 2, 3)
    cond = _randn((2, 4, 8, 8), 16).to(torch.bfloat16)
    expected = renoise_update_torch(z.double(), cond.double(), step_coefficients=(1.1, -0.3))
    got = renoise_update_triton(z.to(KERNEL_DEVICE), cond.to(KERNEL_DEVICE), step_coefficients=(1.1, -0.3))
    assert _close(got.z_next, expected.z_next) and _close(got.eps, expected.eps)


def test_renoise_update_needs_the_running_mean_to_continue_it():
    x = torch.zeros(1, 4, 8, 8)
    with pytest.raises(InputError, match="eps_avg is required"):
        renoise_update(x, x, avg_index=2)


# ----------------------------------------------------------------------------- seed statistics
@pytest.mark.parametrize("shape", [(1, 4, 8, 8), (3, 4, 64, 64), (2, 5, 7, 3), (2, 9000)])
def test_sum_of_squares_kernel_matches_float64(shape):
    x = _randn(shape, 20)
    expected = sum_of_squares_torch(x.double())
    got = sum_of_squares_triton(x.to(KERNEL_DEVICE))
    assert got.dtype == torch.float64 and got.shape == (shape[0],)
    assert _close(got, expected)
    assert not _close(got + 1e-2 * expected.to(got.device), expected)  # negative control


@pytest.mark.parametrize("quantize", [True, False])
@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (2, 3, 37, 29), (3, 3, 64, 64)])
def test_squared_error_kernel_matches_float64(shape, quantize):
    target = torch.rand(shape, generator=torch.Generator().manual_seed(21))
    # Slightly out of [0, 1] on purpose: both paths clamp.
    reconstruction = (target + 0.05 * _randn(shape, 22)).clamp(-0.01, 1.01)
    expected = squared_error_torch(reconstruction, target, quantize)
    got = squared_error_triton(reconstruction.to(KERNEL_DEVICE), target.to(KERNEL_DEVICE), quantize)
    assert _close(got, expected)
    assert not _close(got * 1.001, expected)  # negative control: 0.1% off fails


def test_squared_error_quantisation_rounds_half_to_even_like_torch():
    # 0.5/255 and 1.5/255 sit exactly on rounding ties in float64; in float32 they round to the
    # nearest float first, so compare against the reference fed the same float32 values.
    values = torch.tensor([[0.5, 1.5, 2.5, 254.5, 3.49, 100.0]]) / 255.0
    zeros = torch.zeros_like(values)
    expected = squared_error_torch(values, zeros, True)
    got = squared_error_triton(values.to(KERNEL_DEVICE), zeros.to(KERNEL_DEVICE), True)
    assert _close(got, expected)


# ----------------------------------------------------------------------------- dispatch
def test_auto_backend_runs_the_reference_on_cpu():
    assert _dispatch.resolve_backend("auto", torch.zeros(1), op="x") == "torch"
    assert _dispatch.resolve_backend("torch", torch.zeros(1), op="x") == "torch"


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(InputError, match="backend: got 'cuda'"):
        sum_of_squares(torch.zeros(2, 3), backend="cuda")


def test_triton_on_cpu_without_the_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(_dispatch, "INTERPRETING", False)
    with pytest.raises(InputError, match="TRITON_INTERPRET=1"):
        _dispatch.resolve_backend("triton", torch.zeros(1), op="squared_error")


def test_dispatchers_agree_across_backends():
    x = _randn((2, 4, 16, 16), 30)
    y = _randn((2, 4, 16, 16), 31)
    assert _close(sum_of_squares(x, backend="torch"), sum_of_squares(x.to(KERNEL_DEVICE), backend="triton"))
    assert _close(squared_error(x, y, backend="torch"), squared_error(x.to(KERNEL_DEVICE), y.to(KERNEL_DEVICE), backend="triton"))


# ----------------------------------------------------------------------------- low-precision inputs
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_kernels_with_half_precision_inputs_match_float64_within_dtype_tolerance(dtype):
    # The fast path feeds bf16/fp16 UNet outputs; the kernels compute in fp32. The reference sees
    # the same rounded inputs in float64, so only the kernel's own error is measured.
    shape = (2, 4, 16, 16)
    eps, eps_opt = _randn(shape, 40).to(dtype), _randn(shape, 41).to(dtype)
    offsets = draw_roll_offsets([torch.Generator().manual_seed(i) for i in range(2)], 4, 5, 4, 16, 16)
    expected = noise_regularization_torch(eps.double(), eps_opt.double(), offsets)
    got = noise_regularization_triton(eps.to(KERNEL_DEVICE), eps_opt.to(KERNEL_DEVICE), offsets.to(KERNEL_DEVICE))
    assert got.dtype == dtype  # the result keeps the input dtype
    assert _close(got, expected, dtype)
    assert not _close(got.double() + 0.1, expected, dtype)  # negative control

    z = _randn(shape, 42)
    expected_update = renoise_update_torch(z.double(), eps.double(), eps_opt.double(), 7.5, None, 0, (1.2, -0.4))
    update = renoise_update_triton(z.to(KERNEL_DEVICE), eps.to(KERNEL_DEVICE), eps_opt.to(KERNEL_DEVICE), 7.5, None, 0, (1.2, -0.4))
    for got_t, exp_t in zip(update, expected_update):
        assert _close(got_t, exp_t)  # fp32 outputs from half inputs: fp32 tolerance

    assert _close(sum_of_squares_triton(eps.to(KERNEL_DEVICE)), sum_of_squares_torch(eps.double()))
