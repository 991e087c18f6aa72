"""Decoder inversion (SPEC 6.1-6.2): the VAE latent whose *decoding* matches an image.

The encoder's latent of an image is only approximately what the decoder needs to reproduce it;
MoFC's Sequential Inversion Block optimises the latent directly through the decoder:

    z* = argmin_z  MSE(decoder(z) / 2 + 0.5, x)      x in [0, 1], decoder output unclamped

with Adam (lr 1e-2) from a starting latent: the encoder mean of x itself (step 1, a support image)
or the result for another image (step 2, support -> query). Latents here are the VAE's own
(unscaled) latents; the diffusion model's z0 is `scaling_factor` times them.

Batched: the loss is the sum over the batch of each item's mean squared error, so each item's
gradient is its own, and Adam's update is elementwise: a batch runs exactly the single-item
optimisations side by side (tested against singles). The VAE's weights get no gradient; the caller
holds them frozen (`preserve_module_state` + requires_grad False).
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import NonFiniteError


def decode_unclamped(vae: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """decoder(z) / 2 + 0.5 without clamping, float32 (B, 3, H, W); latents are unscaled."""
    decoded = vae.decode(latents.to(vae.dtype)).sample
    return decoded.float() / 2 + 0.5


def decoder_invert(
    vae: torch.nn.Module,
    targets: torch.Tensor,
    init: torch.Tensor,
    steps: int,
    lr: float = 1e-2,
    names: list[str] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Latents (B, C, h, w) float32 whose decodings match `targets` (B, 3, H, W) in [0, 1].

    Args:
        vae: an `AutoencoderKL` (weights frozen by the caller).
        targets: images in [0, 1] on the VAE's device.
        init: starting latents (B, C, h, w), unscaled; not modified.
        steps: Adam steps (MoFC: 3000); 0 returns `init` unchanged.
        lr: Adam learning rate (MoFC: 1e-2).
        names: per item, for the NaN/Inf message.
        on_step: called after each step (progress bars).
    """
    latents = init.detach().float().clone().requires_grad_(True)
    if steps == 0:
        return latents.detach()
    optimizer = torch.optim.Adam([latents], lr=lr)
    target = targets.float()
    with torch.enable_grad():
        for step in range(steps):
            optimizer.zero_grad(set_to_none=True)
            error = (decode_unclamped(vae, latents) - target).pow(2).flatten(1).mean(dim=1)  # (B,)
            error.sum().backward()
            optimizer.step()
            if on_step is not None:
                on_step(step)
    result = latents.detach()
    bad = torch.nonzero(~torch.isfinite(result.flatten(1)).all(dim=1)).flatten().tolist()
    if bad:
        labels = [names[i] if names else f"item[{i}]" for i in bad]
        raise NonFiniteError(f"decoder inversion diverged (NaN/Inf in the latent) for {labels} after {steps} steps "
                             f"at lr={lr}")
    return result
