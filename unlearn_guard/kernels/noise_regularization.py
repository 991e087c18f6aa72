"""ReNoise noise regularisation (SPEC 2.5) for a batch, with closed-form gradients.

A fused-op trio: the PyTorch reference (`noise_regularization_torch`), the Triton kernel with
its launcher (`noise_regularization_triton`, one program per image, all outer steps in one
launch), and `noise_regularization(..., backend=)` that dispatches; `noise_regularization_autograd`
is the released code's autograd formulation, kept as the benchmark baseline. No autograd: both gradients have closed forms, so the
probe runs entirely under `torch.no_grad`. The SPEC losses themselves (`patch_kl_loss`,
`autocorr_loss`) are kept here as the definition the tests differentiate with autograd.

Notation (SPEC -> code), per image:
    e (C, H, W)      `eps`, the noise estimate being regularised
    e_opt            `eps_opt`, the KL target (eps_theta(z0, t, c))
    PatchKL          per (4x4 patch, channel): log((v_y+1e-6)/(v_x+1e-6)) + (v_x+(m_x-m_y)^2)/(v_y+1e-6) - 1,
                     abs, summed; x = e, y = e_opt; unbiased variance
    AC               per channel and pyramid level (H, H/2, ..., until H <= 8; avg-pool 2x2 between):
                     mean(n * roll(n, r, H))^2 + mean(n * roll(n, r, W))^2, r ~ U{0, ..., h_level//2 - 1}
    one call         repeat num_reg_steps: e -= lambda_kl * clip(dKL/de, +-clip);
                                           repeat num_ac_rolls: e -= lambda_ac * dAC/de / num_ac_rolls

Random draws: one roll offset per (outer step, roll, channel, level) and image, drawn up front
from that image's generator (`draw_roll_offsets`) in the released code's order (outer -> roll ->
channel -> level), so batching never changes a result, the released random stream is reproduced
value for value, and a GPU kernel can consume the same table.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import InputError
from .dispatch import HAS_TRITON, Backend, in_layout_of, next_power_of_2, resolve_backend

if HAS_TRITON:
    import triton
    import triton.language as tl

KL_EPSILON = 1e-6


# ----------------------------------------------------------------------------- pyramid helpers
def autocorr_levels(height: int, width: int) -> list[tuple[int, int]]:
    """Spatial sizes of the AC pyramid: (H, W), (H//2, W//2), ... stopping after the first H <= 8."""
    if height < 2 or width < 1:
        raise ValueError(f"latent of size {height}x{width} is too small for the autocorrelation loss (H >= 2)")
    levels = [(height, width)]
    while levels[-1][0] > 8:
        h, w = levels[-1]
        if w < 2:
            raise ValueError(f"latent width {width} is too small for {len(levels) + 1} pyramid levels")
        levels.append((h // 2, w // 2))
    return levels


def _avg_pool_adjoint(grad: torch.Tensor, fine_hw: tuple[int, int]) -> torch.Tensor:
    """Adjoint of avg_pool2d(kernel 2): spread each coarse value / 4 over its 2x2 block (odd edge gets 0)."""
    up = grad.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1) / 4
    if up.shape[-2:] == fine_hw:
        return up
    return F.pad(up, (0, fine_hw[1] - up.shape[-1], 0, fine_hw[0] - up.shape[-2]))


def _roll_per_channel(x: torch.Tensor, shifts: torch.Tensor, dim: int) -> torch.Tensor:
    """torch.roll of each (b, c) plane by its own shift along dim (-2 or -1); shifts (B, C) long."""
    size = x.shape[dim]
    index = torch.arange(size, device=x.device)
    source = (index.view(1, 1, -1) - shifts.unsqueeze(-1)) % size  # (B, C, size): out[i] = x[i - r]
    if dim == -2:
        source = source.unsqueeze(-1).expand(x.shape)
    else:
        source = source.unsqueeze(-2).expand(x.shape)
    return torch.gather(x, dim, source)


# ----------------------------------------------------------------------------- random draws
def draw_roll_offsets(
    generators: Sequence[torch.Generator],
    num_reg_steps: int,
    num_ac_rolls: int,
    channels: int,
    height: int,
    width: int,
) -> torch.Tensor:
    """Roll offsets for one regularisation call: (B, num_reg_steps, num_ac_rolls, C, L) int64 on CPU.

    Per image, the values are exactly those of the released code, which draws them one at a
    time, `torch.randint(0, h_l // 2, (1,))`, with the loops nested outer step -> roll ->
    channel -> pyramid level (innermost); the table holds them in that same order.
    num_reg_steps * num_ac_rolls * C * L draws per image and call (SPEC 2.5).
    """
    highs = [max(h // 2, 1) for h, _ in autocorr_levels(height, width)]
    count = num_reg_steps * num_ac_rolls * channels * len(highs)
    return torch.stack([_released_order_draws(g, highs, count) for g in generators]).view(
        len(generators), num_reg_steps, num_ac_rolls, channels, len(highs)
    )


def _released_order_draws(generator: torch.Generator, highs: list[int], count: int) -> torch.Tensor:
    """`count` draws cycling through the levels' ranges `highs`, as one-at-a-time randint calls would give.

    On the CPU generator, `randint(0, n)` for n < 2**32 is `random32() % n`, one 32-bit draw per
    value in element order. Drawing all values at once in the range lcm(highs) and reducing each
    modulo its own level's range gives the same values and the same generator end state
    (checked against the one-at-a-time loop in tests/test_noise_regularization.py), about 50x
    faster than 320 separate calls per SD-sized call. Ranges whose lcm needs more than 31 bits
    take the one-at-a-time path.
    """
    common = math.lcm(*highs)
    if common >= 2**31:
        values = [torch.randint(0, highs[i % len(highs)], (1,), generator=generator) for i in range(count)]
        return torch.cat(values) if values else torch.zeros(0, dtype=torch.long)
    raw = torch.randint(0, common, (count,), generator=generator)  # (count,) int64
    return raw.view(-1, len(highs)).remainder(torch.tensor(highs)).flatten()


# ----------------------------------------------------------------------------- the SPEC losses
def _patches(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, P, patch_size**2); rows/cols beyond a whole patch are dropped."""
    b, c, h, w = x.shape
    ph, pw = h // patch_size, w // patch_size
    x = x[..., : ph * patch_size, : pw * patch_size]
    x = x.reshape(b, c, ph, patch_size, pw, patch_size).permute(0, 1, 2, 4, 3, 5)
    return x.reshape(b, c, ph * pw, patch_size * patch_size)


def _patch_kl_terms(x: torch.Tensor, y: torch.Tensor, patch_size: int):
    px, py = _patches(x, patch_size), _patches(y, patch_size)
    mean_x, mean_y = px.mean(-1), py.mean(-1)
    var_x, var_y = px.var(-1, unbiased=True), py.var(-1, unbiased=True)
    term = (
        torch.log((var_y + KL_EPSILON) / (var_x + KL_EPSILON))
        + (var_x + (mean_x - mean_y) ** 2) / (var_y + KL_EPSILON)
        - 1
    )
    return term, px, mean_x, mean_y, var_x, var_y


def patch_kl_loss(eps: torch.Tensor, eps_opt: torch.Tensor, patch_size: int = 4) -> torch.Tensor:
    """SPEC PatchKL per image: (B,) = sum over patches and channels of |KL term| (no 1/2)."""
    term = _patch_kl_terms(eps, eps_opt, patch_size)[0]
    return term.abs().sum(dim=(1, 2))


def autocorr_loss(eps: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """SPEC AC per image: (B,); offsets (B, C, L) are the roll amounts per channel and level."""
    loss = eps.new_zeros(eps.shape[0])
    noise = eps
    for level, _ in enumerate(autocorr_levels(*eps.shape[-2:])):
        if level > 0:
            noise = F.avg_pool2d(noise, kernel_size=2)
        r = offsets[..., level].to(eps.device)
        for dim in (-2, -1):
            corr = (noise * _roll_per_channel(noise, r, dim)).mean(dim=(-2, -1))  # (B, C)
            loss = loss + (corr**2).sum(dim=1)
    return loss


# ----------------------------------------------------------------------------- closed-form gradients
def patch_kl_grad(eps: torch.Tensor, eps_opt: torch.Tensor, patch_size: int = 4) -> torch.Tensor:
    """d PatchKL / d eps, (B, C, H, W); zero on rows/cols outside whole patches."""
    term, px, mean_x, mean_y, var_x, var_y = _patch_kl_terms(eps, eps_opt, patch_size)
    n = px.shape[-1]
    d_var = -1 / (var_x + KL_EPSILON) + 1 / (var_y + KL_EPSILON)  # dT/dv_x
    d_mean = 2 * (mean_x - mean_y) / (var_y + KL_EPSILON)  # dT/dm_x
    grad = d_var.unsqueeze(-1) * 2 * (px - mean_x.unsqueeze(-1)) / (n - 1) + (d_mean / n).unsqueeze(-1)
    grad = grad * torch.sign(term).unsqueeze(-1)  # d|T| = sign(T) dT, sign(0) = 0 as in autograd
    b, c, h, w = eps.shape
    ph, pw = h // patch_size, w // patch_size
    grad = grad.reshape(b, c, ph, pw, patch_size, patch_size).permute(0, 1, 2, 4, 3, 5)
    grad = grad.reshape(b, c, ph * patch_size, pw * patch_size)
    if grad.shape[-2:] != (h, w):
        grad = F.pad(grad, (0, w - grad.shape[-1], 0, h - grad.shape[-2]))
    return grad


def autocorr_grad(eps: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """d AC / d eps, (B, C, H, W). Per level: 2 a / N (roll(n, r) + roll(n, -r)) along each axis,
    with a = mean(n * roll(n, r)); coarse levels are carried back by the avg-pool adjoint."""
    levels = autocorr_levels(*eps.shape[-2:])
    pyramid = [eps]
    for _ in levels[1:]:
        pyramid.append(F.avg_pool2d(pyramid[-1], kernel_size=2))
    grad = None
    for level in range(len(levels) - 1, -1, -1):
        noise = pyramid[level]
        r = offsets[..., level].to(eps.device)
        count = noise.shape[-2] * noise.shape[-1]
        level_grad = torch.zeros_like(noise)
        for dim in (-2, -1):
            forward = _roll_per_channel(noise, r, dim)
            backward = _roll_per_channel(noise, -r, dim)
            corr = (noise * forward).mean(dim=(-2, -1), keepdim=True)  # (B, C, 1, 1)
            level_grad = level_grad + 2 * corr / count * (forward + backward)
        grad = level_grad if grad is None else level_grad + _avg_pool_adjoint(grad, noise.shape[-2:])
    return grad


# ----------------------------------------------------------------------------- the op
def noise_regularization_torch(
    eps: torch.Tensor,
    eps_opt: torch.Tensor,
    roll_offsets: torch.Tensor,
    lambda_kl: float = 0.065,
    lambda_ac: float = 20.0,
    kl_grad_clip: float = 100.0,
    patch_size: int = 4,
) -> torch.Tensor:
    """Regularise a batch of noise estimates (SPEC 2.5). PyTorch reference.

    Args:
        eps: (B, C, H, W) float, the estimates to regularise.
        eps_opt: (B, C, H, W) float, the PatchKL targets.
        roll_offsets: (B, num_reg_steps, num_ac_rolls, C, L) int64 from `draw_roll_offsets`;
            its second and third dims give the number of outer steps and AC rolls.
        lambda_kl, lambda_ac, kl_grad_clip, patch_size: SPEC constants (0 disables a term).
    Returns:
        (B, C, H, W) regularised estimates, same dtype as eps.
    """
    num_reg_steps, num_ac_rolls = roll_offsets.shape[1], roll_offsets.shape[2]
    e = eps
    for outer in range(num_reg_steps):
        if lambda_kl > 0:
            e = e - lambda_kl * patch_kl_grad(e, eps_opt, patch_size).clamp(-kl_grad_clip, kl_grad_clip)
        if lambda_ac > 0:
            for roll in range(num_ac_rolls):
                e = e - lambda_ac * autocorr_grad(e, roll_offsets[:, outer, roll]) / num_ac_rolls
    return e


def noise_regularization_autograd(
    eps: torch.Tensor,
    eps_opt: torch.Tensor,
    roll_offsets: torch.Tensor,
    lambda_kl: float = 0.065,
    lambda_ac: float = 20.0,
    kl_grad_clip: float = 100.0,
    patch_size: int = 4,
) -> torch.Tensor:
    """The released code's way: differentiate the SPEC losses with autograd, one step at a time.

    Same signature and result as `noise_regularization_torch`; kept as the benchmark baseline
    ("reference-style") and as an oracle for the closed-form gradients.
    """
    num_reg_steps, num_ac_rolls = roll_offsets.shape[1], roll_offsets.shape[2]
    e = eps.detach()
    with torch.enable_grad():
        for outer in range(num_reg_steps):
            if lambda_kl > 0:
                x = e.clone().requires_grad_(True)
                (grad,) = torch.autograd.grad(patch_kl_loss(x, eps_opt.detach(), patch_size).sum(), x)
                e = (e - lambda_kl * grad.clamp(-kl_grad_clip, kl_grad_clip)).detach()
            if lambda_ac > 0:
                for roll in range(num_ac_rolls):
                    x = e.clone().requires_grad_(True)
                    (grad,) = torch.autograd.grad(autocorr_loss(x, roll_offsets[:, outer, roll]).sum(), x)
                    e = (e - lambda_ac * grad / num_ac_rolls).detach()
    return e


# ----------------------------------------------------------------------------- the Triton kernel
# Largest per-image tile the kernel holds in registers (C x H*W, padded to powers of two):
# 4 x 64 x 64 (SD 1.x/2.x latents) fits; larger latents use the PyTorch path under "auto".
MAX_TILE = 1 << 15

if HAS_TRITON:

    @triton.jit
    def _noise_regularization_kernel(
        eps_ptr,  # (B, C, H, W) input, any float dtype
        eps_opt_ptr,  # (B, C, H, W) PatchKL target
        offsets_ptr,  # (B, OUTER, ROLLS, C, LEVELS) int32 roll offsets
        work_ptr,  # (B, C*H*W) fp32: the estimate being regularised (pyramid level 0)
        scratch_ptr,  # (B, 2*LEVELS, C*H*W) fp32: pyramid levels 1.. and AC gradients per level
        out_ptr,  # (B, C, H, W) result, eps's dtype
        lambda_kl,
        lambda_ac_per_roll,
        kl_grad_clip,
        OUTER: tl.constexpr,
        ROLLS: tl.constexpr,
        C: tl.constexpr,
        H: tl.constexpr,
        W: tl.constexpr,
        LEVELS: tl.constexpr,
        P: tl.constexpr,
        DO_KL: tl.constexpr,
        DO_AC: tl.constexpr,
        BLOCK_C: tl.constexpr,
        BLOCK_HW: tl.constexpr,
        BLOCK_ROWS: tl.constexpr,
        BLOCK_PP: tl.constexpr,
    ):
        # One program per image: every outer step, KL step and AC roll of SPEC 2.5 in one launch.
        # The image's working set lives in `work`/`scratch` (L2-resident: 512 KiB for 4x64x64);
        # a block barrier separates each write from the reads of other threads.
        image = tl.program_id(0)
        CHW: tl.constexpr = C * H * W
        work = work_ptr + image * CHW
        scratch = scratch_ptr + image * (2 * LEVELS * CHW)
        chan = tl.arange(0, BLOCK_C)[:, None]  # (BLOCK_C, 1)
        chan_ok = chan < C

        # 0. e := eps in fp32.
        hw0 = tl.arange(0, BLOCK_HW)[None, :]
        mask0 = chan_ok & (hw0 < H * W)
        flat0 = chan * (H * W) + hw0
        e0 = tl.load(eps_ptr + image * CHW + flat0, mask=mask0, other=0.0).to(tl.float32)
        tl.store(work + flat0, e0, mask=mask0)

        # PatchKL layout: row = c * NP + patch, column = position inside the P x P patch.
        NPW: tl.constexpr = W // P
        NP: tl.constexpr = (H // P) * NPW
        N_PATCH: tl.constexpr = P * P
        rows = tl.arange(0, BLOCK_ROWS)[:, None]
        cols = tl.arange(0, BLOCK_PP)[None, :]
        kl_mask = (rows < C * NP) & (cols < N_PATCH)
        if DO_KL:
            patch = rows % NP
            kl_flat = (rows // NP) * (H * W) + ((patch // NPW) * P + cols // P) * W + (patch % NPW) * P + cols % P
            # 1. Statistics of the target, fixed for the whole call: mean and unbiased variance.
            y = tl.load(eps_opt_ptr + image * CHW + kl_flat, mask=kl_mask, other=0.0).to(tl.float32)
            mean_y = tl.sum(y, axis=1) / N_PATCH
            dev_y = tl.where(kl_mask, y - mean_y[:, None], 0.0)
            var_y = tl.sum(dev_y * dev_y, axis=1) / (N_PATCH - 1)

        for outer in range(OUTER):
            if DO_KL:
                # 2. e -= lambda_kl * clip(d|KL term|/de), patch-local closed form.
                tl.debug_barrier()
                x = tl.load(work + kl_flat, mask=kl_mask, other=0.0)
                mean_x = tl.sum(x, axis=1) / N_PATCH
                dev_x = tl.where(kl_mask, x - mean_x[:, None], 0.0)
                var_x = tl.sum(dev_x * dev_x, axis=1) / (N_PATCH - 1)
                term = tl.log((var_y + 1e-6) / (var_x + 1e-6)) + (var_x + (mean_x - mean_y) * (mean_x - mean_y)) / (var_y + 1e-6) - 1.0
                sign = tl.where(term > 0, 1.0, tl.where(term < 0, -1.0, 0.0))
                d_var = -1.0 / (var_x + 1e-6) + 1.0 / (var_y + 1e-6)
                d_mean = 2.0 * (mean_x - mean_y) / (var_y + 1e-6)
                kl_grad = sign[:, None] * (d_var[:, None] * 2.0 * dev_x / (N_PATCH - 1) + (d_mean / N_PATCH)[:, None])
                kl_grad = tl.minimum(tl.maximum(kl_grad, -kl_grad_clip), kl_grad_clip)
                tl.store(work + kl_flat, x - lambda_kl * kl_grad, mask=kl_mask)
            if DO_AC:
                for roll in range(ROLLS):
                    tl.debug_barrier()
                    # 3. Pyramid levels 1.. by 2x2 average pooling (floor: an odd edge is dropped).
                    for level in tl.static_range(1, LEVELS):
                        HL = H >> level
                        WL = W >> level
                        HP = H >> (level - 1)
                        WP = W >> (level - 1)
                        hw = tl.arange(0, BLOCK_HW >> (2 * level))[None, :]
                        mask = chan_ok & (hw < HL * WL)
                        if level == 1:
                            src = work + chan * (HP * WP) + (hw // WL) * 2 * WP + (hw % WL) * 2
                        else:
                            src = scratch + (level - 1) * CHW + chan * (HP * WP) + (hw // WL) * 2 * WP + (hw % WL) * 2
                        a = tl.load(src, mask=mask, other=0.0)
                        b = tl.load(src + 1, mask=mask, other=0.0)
                        c = tl.load(src + WP, mask=mask, other=0.0)
                        d = tl.load(src + WP + 1, mask=mask, other=0.0)
                        tl.store(scratch + level * CHW + chan * (HL * WL) + hw, (a + b + c + d) * 0.25, mask=mask)
                        tl.debug_barrier()
                    # 4. AC gradient per level, coarsest first; coarser gradients reach finer
                    #    levels through the avg-pool adjoint (value / 4 over the 2x2 block).
                    for level in tl.static_range(LEVELS - 1, -1, -1):
                        HL = H >> level
                        WL = W >> level
                        COUNT = HL * WL
                        hw = tl.arange(0, BLOCK_HW >> (2 * level))[None, :]
                        mask = chan_ok & (hw < COUNT)
                        if level == 0:
                            plane = work + chan * COUNT
                        else:
                            plane = scratch + level * CHW + chan * COUNT
                        row = hw // WL
                        col = hw % WL
                        r = tl.load(
                            offsets_ptr + (((image * OUTER + outer) * ROLLS + roll) * C + chan) * LEVELS + level,
                            mask=chan_ok,
                            other=0,
                        )
                        r_row = r % HL
                        r_col = r % WL
                        n = tl.load(plane + hw, mask=mask, other=0.0)
                        fwd_row = tl.load(plane + ((row - r_row + HL) % HL) * WL + col, mask=mask, other=0.0)
                        bwd_row = tl.load(plane + ((row + r_row) % HL) * WL + col, mask=mask, other=0.0)
                        fwd_col = tl.load(plane + row * WL + (col - r_col + WL) % WL, mask=mask, other=0.0)
                        bwd_col = tl.load(plane + row * WL + (col + r_col) % WL, mask=mask, other=0.0)
                        corr_row = tl.sum(n * fwd_row, axis=1) / COUNT  # (BLOCK_C,)
                        corr_col = tl.sum(n * fwd_col, axis=1) / COUNT
                        grad = (2.0 / COUNT) * (corr_row[:, None] * (fwd_row + bwd_row) + corr_col[:, None] * (fwd_col + bwd_col))
                        if level < LEVELS - 1:
                            HC = HL >> 1
                            WC = WL >> 1
                            coarse_ok = mask & (row // 2 < HC) & (col // 2 < WC)
                            coarse = scratch + (LEVELS + level + 1) * CHW + chan * (HC * WC) + (row // 2) * WC + col // 2
                            grad += tl.load(coarse, mask=coarse_ok, other=0.0) * 0.25
                        if level > 0:
                            tl.store(scratch + (LEVELS + level) * CHW + chan * COUNT + hw, grad, mask=mask)
                        else:
                            # 5. e -= lambda_ac / rolls * dAC/de
                            tl.store(plane + hw, n - lambda_ac_per_roll * grad, mask=mask)
                        tl.debug_barrier()

        # 6. Result in eps's dtype.
        tl.debug_barrier()
        e = tl.load(work + flat0, mask=mask0, other=0.0)
        tl.store(out_ptr + image * CHW + flat0, e.to(out_ptr.dtype.element_ty), mask=mask0)


def _tile_sizes(channels: int, height: int, width: int, patch_size: int) -> dict[str, int]:
    num_patches = (height // patch_size) * (width // patch_size)
    return {
        "BLOCK_C": next_power_of_2(channels),
        "BLOCK_HW": next_power_of_2(height * width),
        "BLOCK_ROWS": next_power_of_2(max(channels * num_patches, 1)),
        "BLOCK_PP": next_power_of_2(patch_size * patch_size),
    }


def triton_supports(shape: Sequence[int], patch_size: int = 4) -> bool:
    """Whether the fused kernel's per-image tile fits (C x H*W and the patch layout, padded)."""
    _, channels, height, width = shape
    sizes = _tile_sizes(channels, height, width, patch_size)
    return max(sizes["BLOCK_C"] * sizes["BLOCK_HW"], sizes["BLOCK_ROWS"] * sizes["BLOCK_PP"]) <= MAX_TILE


def noise_regularization_triton(
    eps: torch.Tensor,
    eps_opt: torch.Tensor,
    roll_offsets: torch.Tensor,
    lambda_kl: float = 0.065,
    lambda_ac: float = 20.0,
    kl_grad_clip: float = 100.0,
    patch_size: int = 4,
) -> torch.Tensor:
    """Fused Triton version of `noise_regularization_torch` (same signature and result)."""
    if not HAS_TRITON:
        raise InputError("noise_regularization: backend='triton' needs the triton package")
    _check_arguments(eps, eps_opt, roll_offsets, patch_size)
    batch, channels, height, width = eps.shape
    if not triton_supports(eps.shape, patch_size):
        raise InputError(
            f"noise_regularization: a latent of shape {tuple(eps.shape[1:])} exceeds the fused kernel's tile "
            f"({MAX_TILE} values per image); use backend='torch'"
        )
    levels = len(autocorr_levels(height, width))
    num_reg_steps, num_ac_rolls = roll_offsets.shape[1], roll_offsets.shape[2]
    out = torch.empty_like(eps, memory_format=torch.contiguous_format)
    if batch == 0:
        return out
    eps_c = eps.contiguous()
    opt_c = eps_opt.to(eps.device).contiguous()
    offsets = roll_offsets.to(device=eps.device, dtype=torch.int32).contiguous()
    work = torch.empty((batch, channels * height * width), dtype=torch.float32, device=eps.device)
    scratch = torch.empty((batch, 2 * levels, channels * height * width), dtype=torch.float32, device=eps.device)
    do_kl = lambda_kl > 0 and (height // patch_size) * (width // patch_size) > 0
    do_ac = lambda_ac > 0 and num_ac_rolls > 0
    sizes = _tile_sizes(channels, height, width, patch_size)
    tile = max(sizes["BLOCK_C"] * sizes["BLOCK_HW"], sizes["BLOCK_ROWS"] * sizes["BLOCK_PP"])
    _noise_regularization_kernel[(batch,)](
        eps_c, opt_c, offsets, work, scratch, out,
        float(lambda_kl), float(lambda_ac) / max(num_ac_rolls, 1), float(kl_grad_clip),
        OUTER=num_reg_steps, ROLLS=num_ac_rolls, C=channels, H=height, W=width, LEVELS=levels, P=patch_size,
        DO_KL=do_kl, DO_AC=do_ac, num_warps=8 if tile >= 4096 else 4, **sizes,
    )  # fmt: skip
    return out


def _check_arguments(eps: torch.Tensor, eps_opt: torch.Tensor, roll_offsets: torch.Tensor, patch_size: int) -> None:
    """One check of the op's inputs, naming the argument, its shape/dtype and what was expected."""
    if not isinstance(eps, torch.Tensor) or eps.dim() != 4 or not eps.is_floating_point():
        got = f"{tuple(eps.shape)} {eps.dtype}" if isinstance(eps, torch.Tensor) else type(eps).__name__
        raise InputError(f"noise_regularization: eps must be a floating (B, C, H, W) tensor, got {got}")
    if not isinstance(eps_opt, torch.Tensor) or eps_opt.shape != eps.shape:
        got = tuple(eps_opt.shape) if isinstance(eps_opt, torch.Tensor) else type(eps_opt).__name__
        raise InputError(f"noise_regularization: eps_opt must have eps's shape {tuple(eps.shape)}, got {got}")
    levels = len(autocorr_levels(*eps.shape[-2:]))
    if (
        not isinstance(roll_offsets, torch.Tensor)
        or roll_offsets.dim() != 5
        or roll_offsets.shape[0] != eps.shape[0]
        or roll_offsets.shape[3] != eps.shape[1]
        or roll_offsets.shape[4] != levels
        or roll_offsets.is_floating_point()
    ):
        got = f"{tuple(roll_offsets.shape)} {roll_offsets.dtype}" if isinstance(roll_offsets, torch.Tensor) else type(roll_offsets).__name__
        raise InputError(
            f"noise_regularization: roll_offsets must be an integer tensor (B={eps.shape[0]}, outer, rolls, "
            f"C={eps.shape[1]}, L={levels}), got {got}"
        )
    if not isinstance(patch_size, int) or patch_size < 2:
        raise InputError(f"noise_regularization: patch_size must be an int >= 2, got {patch_size!r}")


def noise_regularization(
    eps: torch.Tensor,
    eps_opt: torch.Tensor,
    roll_offsets: torch.Tensor,
    lambda_kl: float = 0.065,
    lambda_ac: float = 20.0,
    kl_grad_clip: float = 100.0,
    patch_size: int = 4,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Regularise a batch of noise estimates (SPEC 2.5), on the fused Triton kernel or the reference.

    backend: "auto" (Triton on CUDA when the tile fits, PyTorch otherwise), "triton", or "torch".
    Arguments as in `noise_regularization_torch`. The result has eps's memory layout.
    """
    _check_arguments(eps, eps_opt, roll_offsets, patch_size)
    chosen = resolve_backend(backend, eps, op="noise_regularization")
    if chosen == "triton" and backend == "auto" and not triton_supports(eps.shape, patch_size):
        chosen = "torch"
    implementation = noise_regularization_triton if chosen == "triton" else noise_regularization_torch
    return in_layout_of(implementation(eps, eps_opt, roll_offsets, lambda_kl, lambda_ac, kl_grad_clip, patch_size), eps)
