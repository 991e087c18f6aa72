"""One ReNoise iteration's elementwise work (SPEC 2.1, 2.3) in one pass over the batch.

Per element, in this order:
    eps   = eps_u + w (eps_c - eps_u)           CFG combine (only with an unconditional half)
    avg   = (j avg + eps) / (j + 1)             running mean, j = index inside the window (j = 0: avg = eps)
    z_new = coef_z z + coef_eps eps             inverse DDIM step, always anchored at z (SPEC 1)
with coef_z = sqrt(abar_t / abar_s), coef_eps = sqrt(1 - abar_t) - sqrt(abar_t) sqrt(1 - abar_s) / sqrt(abar_s).

A fused-op trio: `renoise_update_torch` (reference), `renoise_update_triton` (kernel + launcher),
`renoise_update(..., backend=)`. Each output is optional, so the same op serves an iteration
that regularises before stepping (combine + average only) and one that steps at once.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..errors import InputError
from .dispatch import HAS_TRITON, Backend, in_layout_of, resolve_backend

if HAS_TRITON:
    import triton
    import triton.language as tl


class RenoiseUpdate(NamedTuple):
    eps: torch.Tensor  # (B, C, h, w) combined noise estimate, float32
    eps_avg: torch.Tensor | None  # running mean after this iteration, when averaging
    z_next: torch.Tensor | None  # inverse DDIM step from z with eps, when stepping


def inverse_step_coefficients(alpha_prod_t: float, alpha_prod_s: float) -> tuple[float, float]:
    """(coef_z, coef_eps) of the inverse DDIM step, formed in float64 (SPEC 1)."""
    a_t, a_s = float(alpha_prod_t), float(alpha_prod_s)
    return (a_t / a_s) ** 0.5, (1 - a_t) ** 0.5 - a_t**0.5 * (1 - a_s) ** 0.5 / a_s**0.5


def _check(z, eps_cond, eps_uncond, eps_avg, avg_index, step_coefficients) -> None:
    for name, value in (("z", z), ("eps_cond", eps_cond), ("eps_uncond", eps_uncond), ("eps_avg", eps_avg)):
        if value is None and name in ("eps_uncond", "eps_avg"):
            continue
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.shape != eps_cond.shape:
            got = f"{tuple(value.shape)} {value.dtype}" if isinstance(value, torch.Tensor) else type(value).__name__
            raise InputError(f"renoise_update: {name} must be a floating tensor of shape {tuple(eps_cond.shape)}, got {got}")
    if avg_index is not None and (not isinstance(avg_index, int) or avg_index < 0):
        raise InputError(f"renoise_update: avg_index must be None or an int >= 0, got {avg_index!r}")
    if avg_index is not None and avg_index > 0 and eps_avg is None:
        raise InputError(f"renoise_update: avg_index={avg_index} continues a running mean, so eps_avg is required")
    if step_coefficients is not None and len(step_coefficients) != 2:
        raise InputError(f"renoise_update: step_coefficients must be (coef_z, coef_eps), got {step_coefficients!r}")


def renoise_update_torch(
    z: torch.Tensor,
    eps_cond: torch.Tensor,
    eps_uncond: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    eps_avg: torch.Tensor | None = None,
    avg_index: int | None = None,
    step_coefficients: tuple[float, float] | None = None,
) -> RenoiseUpdate:
    """PyTorch reference, computed in float32 (float64 inputs stay float64). Args: z (B, C, h, w) anchor latent; eps_cond/eps_uncond UNet outputs;
    avg_index None (no averaging) or j; step_coefficients (coef_z, coef_eps) or None (no step)."""
    dtype = torch.promote_types(eps_cond.dtype, torch.float32)  # float64 stays float64 (test oracle)
    eps = eps_cond.to(dtype)
    if eps_uncond is not None:
        uncond = eps_uncond.to(dtype)
        eps = uncond + guidance_scale * (eps - uncond)
    avg = None
    if avg_index is not None:
        avg = eps.clone() if avg_index == 0 else (avg_index * eps_avg.to(dtype) + eps) / (avg_index + 1)
    z_next = None
    if step_coefficients is not None:
        coef_z, coef_eps = step_coefficients
        z_next = coef_z * z.to(dtype) + coef_eps * eps
    return RenoiseUpdate(eps, avg, z_next)


if HAS_TRITON:

    @triton.jit
    def _renoise_update_kernel(
        z_ptr, cond_ptr, uncond_ptr, avg_in_ptr, eps_out_ptr, avg_out_ptr, z_out_ptr,
        numel, guidance_scale, avg_index, coef_z, coef_eps,
        HAS_UNCOND: tl.constexpr, WRITE_EPS: tl.constexpr, READ_AVG: tl.constexpr, WRITE_AVG: tl.constexpr,
        STEP: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < numel
        eps = tl.load(cond_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        if HAS_UNCOND:
            uncond = tl.load(uncond_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
            eps = uncond + guidance_scale * (eps - uncond)
        if WRITE_EPS:
            tl.store(eps_out_ptr + offsets, eps, mask=mask)
        if WRITE_AVG:
            if READ_AVG:
                avg = tl.load(avg_in_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
                avg = (avg_index * avg + eps) / (avg_index + 1.0)
            else:
                avg = eps
            tl.store(avg_out_ptr + offsets, avg, mask=mask)
        if STEP:
            z = tl.load(z_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
            tl.store(z_out_ptr + offsets, coef_z * z + coef_eps * eps, mask=mask)


def renoise_update_triton(
    z: torch.Tensor,
    eps_cond: torch.Tensor,
    eps_uncond: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    eps_avg: torch.Tensor | None = None,
    avg_index: int | None = None,
    step_coefficients: tuple[float, float] | None = None,
) -> RenoiseUpdate:
    """Fused Triton version of `renoise_update_torch`; outputs are float32."""
    if not HAS_TRITON:
        raise InputError("renoise_update: backend='triton' needs the triton package")
    _check(z, eps_cond, eps_uncond, eps_avg, avg_index, step_coefficients)
    cond = eps_cond.contiguous()
    numel = cond.numel()
    # Without CFG a float32 eps is the input itself (as in the reference): no copy to write.
    write_eps = eps_uncond is not None or cond.dtype != torch.float32
    eps_out = torch.empty(cond.shape, dtype=torch.float32, device=cond.device) if write_eps else cond
    avg_out = torch.empty_like(eps_out) if avg_index is not None else None
    z_out = torch.empty_like(eps_out) if step_coefficients is not None else None
    if numel == 0:
        return RenoiseUpdate(eps_out, avg_out, z_out)
    coef_z, coef_eps = step_coefficients if step_coefficients is not None else (0.0, 0.0)
    read_avg = avg_index is not None and avg_index > 0
    block = 1024
    _renoise_update_kernel[(triton.cdiv(numel, block),)](
        z.contiguous(), cond,
        eps_uncond.contiguous() if eps_uncond is not None else cond,
        eps_avg.contiguous() if read_avg else cond,
        eps_out,
        avg_out if avg_out is not None else eps_out,
        z_out if z_out is not None else eps_out,
        numel, float(guidance_scale), float(avg_index or 0), float(coef_z), float(coef_eps),
        HAS_UNCOND=eps_uncond is not None, WRITE_EPS=write_eps, READ_AVG=read_avg, WRITE_AVG=avg_index is not None,
        STEP=step_coefficients is not None, BLOCK=block, num_warps=4,
    )  # fmt: skip
    return RenoiseUpdate(eps_out, avg_out, z_out)


def renoise_update(
    z: torch.Tensor,
    eps_cond: torch.Tensor,
    eps_uncond: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    eps_avg: torch.Tensor | None = None,
    avg_index: int | None = None,
    step_coefficients: tuple[float, float] | None = None,
    backend: Backend = "auto",
) -> RenoiseUpdate:
    """CFG combine, running mean and inverse DDIM step in one pass; see the module docstring."""
    _check(z, eps_cond, eps_uncond, eps_avg, avg_index, step_coefficients)
    tensors = [t for t in (z, eps_cond, eps_uncond, eps_avg) if t is not None]
    chosen = resolve_backend(backend, *tensors, op="renoise_update")
    implementation = renoise_update_triton if chosen == "triton" else renoise_update_torch
    update = implementation(z, eps_cond, eps_uncond, guidance_scale, eps_avg, avg_index, step_coefficients)
    # Outputs keep the inputs' memory layout (a channels_last latent stays channels_last).
    return RenoiseUpdate(*(None if t is None else in_layout_of(t, like)
                           for t, like in ((update.eps, eps_cond), (update.eps_avg, eps_cond), (update.z_next, z))))
