"""ReNoise noise regularisation (SPEC 2.5) for a batch, with closed-form gradients.

This file is the PyTorch reference of the fused op; the Triton kernel (GPU issue) will sit
beside it with the same signature. No autograd: both gradients have closed forms, so the
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
from that image's generator (`draw_roll_offsets`), so batching never changes a result and a
GPU kernel can consume the same table.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

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

    For each image and level l, one `torch.randint(0, h_l // 2, ...)` draw per (outer, roll,
    channel): num_reg_steps * num_ac_rolls * C * L draws per image and call (SPEC 2.5).
    """
    levels = autocorr_levels(height, width)
    tables = []
    for generator in generators:
        per_level = [
            torch.randint(0, max(h // 2, 1), (num_reg_steps, num_ac_rolls, channels), generator=generator)
            for h, _ in levels
        ]
        tables.append(torch.stack(per_level, dim=-1))
    return torch.stack(tables)


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
