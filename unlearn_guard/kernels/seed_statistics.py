"""Per-image reductions behind the probe's numbers, as fused kernels (SPEC 3, 4).

    sum_of_squares(z)             sum_i z_i^2 per image   -> NLL = sum/2 + D ln(2 pi)/2
    squared_error(x, y, quantize) sum_i (q(x_i) - q(y_i))^2 per image, q(v) = round(255 clamp(v, 0, 1)) / 255
                                  when quantize (the `mofc` PSNR), else clamp only -> PSNR = 10 log10(D / sum)

A fused-op trio each: the PyTorch reference (`*_torch`, float64), the Triton kernel with its
launcher (`*_triton`: fp32 partial sums per (image, chunk), added in float64 on the host, so
the result is deterministic), and a dispatcher with `backend=`. Results are (B,) float64.
"""

from __future__ import annotations

import torch

from ..errors import InputError
from .dispatch import HAS_TRITON, Backend, resolve_backend

if HAS_TRITON:
    import triton
    import triton.language as tl

_BLOCK = 4096


def _check_batch(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.numel() == 0 or not x.is_floating_point():
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"{name}: expected a non-empty floating tensor of shape (B, ...), got {got}")


def sum_of_squares_torch(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B,) float64 sum of squares of each image's entries (reference)."""
    _check_batch("x", x)
    return x.detach().to(torch.float64).flatten(1).square().sum(dim=1)


def _quantized(x: torch.Tensor, quantize: bool) -> torch.Tensor:
    x = x.detach().to(torch.float64).flatten(1).clamp(0.0, 1.0)
    return torch.round(x * 255.0) / 255.0 if quantize else x


def squared_error_torch(reconstruction: torch.Tensor, target: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """(B, ...) pairs -> (B,) float64 sum of squared differences after clamp (and 8-bit rounding)."""
    _check_pair(reconstruction, target)
    return (_quantized(reconstruction, quantize) - _quantized(target, quantize)).square().sum(dim=1)


def _check_pair(reconstruction: torch.Tensor, target: torch.Tensor) -> None:
    _check_batch("reconstruction", reconstruction)
    _check_batch("target", target)
    if reconstruction.shape != target.shape:
        raise InputError(
            f"reconstruction and target must have the same shape, got {tuple(reconstruction.shape)} and {tuple(target.shape)}"
        )


if HAS_TRITON:

    @triton.jit
    def _sum_of_squares_kernel(x_ptr, partial_ptr, per_image, chunks, BLOCK: tl.constexpr):
        image = tl.program_id(0)
        chunk = tl.program_id(1)
        offsets = chunk * BLOCK + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + image.to(tl.int64) * per_image + offsets, mask=offsets < per_image, other=0.0).to(tl.float32)
        tl.store(partial_ptr + image * chunks + chunk, tl.sum(x * x, axis=0))

    @triton.jit
    def _squared_error_kernel(x_ptr, y_ptr, partial_ptr, per_image, chunks, QUANTIZE: tl.constexpr, BLOCK: tl.constexpr):
        image = tl.program_id(0)
        chunk = tl.program_id(1)
        offsets = chunk * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < per_image
        base = image.to(tl.int64) * per_image
        x = tl.minimum(tl.maximum(tl.load(x_ptr + base + offsets, mask=mask, other=0.0).to(tl.float32), 0.0), 1.0)
        y = tl.minimum(tl.maximum(tl.load(y_ptr + base + offsets, mask=mask, other=0.0).to(tl.float32), 0.0), 1.0)
        if QUANTIZE:
            # In float64 like the reference, so ties (k + 0.5) / 255 round the same way; adding and
            # subtracting 1.5 * 2**52 rounds to the nearest integer, ties to even, like torch.round
            # (libdevice's rint has no interpreter twin).
            xq = ((x.to(tl.float64) * 255.0 + 6755399441055744.0) - 6755399441055744.0) / 255.0
            yq = ((y.to(tl.float64) * 255.0 + 6755399441055744.0) - 6755399441055744.0) / 255.0
            d = (xq - yq).to(tl.float32)
        else:
            d = x - y
        tl.store(partial_ptr + image * chunks + chunk, tl.sum(d * d, axis=0))


def _partials(batch: int, per_image: int, device: torch.device) -> tuple[torch.Tensor, int]:
    chunks = triton.cdiv(per_image, _BLOCK)
    return torch.empty((batch, chunks), dtype=torch.float32, device=device), chunks


def sum_of_squares_triton(x: torch.Tensor) -> torch.Tensor:
    """Fused Triton version of `sum_of_squares_torch`."""
    if not HAS_TRITON:
        raise InputError("sum_of_squares: backend='triton' needs the triton package")
    _check_batch("x", x)
    flat = x.detach().reshape(x.shape[0], -1).contiguous()
    partial, chunks = _partials(flat.shape[0], flat.shape[1], flat.device)
    _sum_of_squares_kernel[(flat.shape[0], chunks)](flat, partial, flat.shape[1], chunks, BLOCK=_BLOCK, num_warps=8)
    return partial.to(torch.float64).sum(dim=1)


def squared_error_triton(reconstruction: torch.Tensor, target: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """Fused Triton version of `squared_error_torch`."""
    if not HAS_TRITON:
        raise InputError("squared_error: backend='triton' needs the triton package")
    _check_pair(reconstruction, target)
    x = reconstruction.detach().reshape(reconstruction.shape[0], -1).contiguous()
    y = target.detach().to(x.device).reshape(x.shape).contiguous()
    partial, chunks = _partials(x.shape[0], x.shape[1], x.device)
    _squared_error_kernel[(x.shape[0], chunks)](x, y, partial, x.shape[1], chunks, QUANTIZE=bool(quantize), BLOCK=_BLOCK, num_warps=8)
    return partial.to(torch.float64).sum(dim=1)


def sum_of_squares(x: torch.Tensor, backend: Backend = "auto") -> torch.Tensor:
    """(B, ...) -> (B,) float64 per-image sum of squares, fused on CUDA."""
    _check_batch("x", x)
    chosen = resolve_backend(backend, x, op="sum_of_squares")
    return sum_of_squares_triton(x) if chosen == "triton" else sum_of_squares_torch(x)


def squared_error(
    reconstruction: torch.Tensor, target: torch.Tensor, quantize: bool = True, backend: Backend = "auto"
) -> torch.Tensor:
    """(B, ...) pairs -> (B,) float64 per-image sum of squared differences, fused on CUDA."""
    _check_pair(reconstruction, target)
    chosen = resolve_backend(backend, reconstruction, target, op="squared_error")
    if chosen == "triton":
        return squared_error_triton(reconstruction, target, quantize)
    return squared_error_torch(reconstruction, target, quantize)
