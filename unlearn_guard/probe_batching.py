"""Chunked work with an out-of-memory fallback: the probe's batch size, and a loop that halves the
chunk and retries when CUDA runs out of memory. Results do not depend on the chunking because
every random draw comes from per-image generators (`probe_seeds`)."""

from __future__ import annotations

from typing import Any, Callable

import torch

from .config import ProbeConfig
from .errors import ProbeFailure

_CUDA_AUTO_BATCH = 16
# On CPU a UNet call on a small latent costs mostly fixed overhead, so bigger chunks are cheaper per
# image (benchmarks/RESULTS.md, "probe_presets: world ... automatic chunk"); at SD size (512x512
# pixels) the chunk stays 4, and it grows to at most 16 for small images.
_CPU_AUTO_BATCH = 4
_CPU_AUTO_BATCH_MAX = 16
_CPU_REFERENCE_PIXELS = 512 * 512


def auto_batch_size(config: ProbeConfig, device: torch.device, count: int, pixels: int | None = None) -> int:
    """Images per chunk: the config's batch_size, or a default for the device; at most `count`.

    On CUDA the default is 16. On CPU it is 4 at SD's 512x512 and grows as the images shrink
    (4 x 512^2 / pixels, at most 16), where `pixels` is height x width of the model's images
    (None: 4)."""
    if config.batch_size is not None:
        return min(config.batch_size, count)
    if device.type == "cuda":
        return min(_CUDA_AUTO_BATCH, count)
    scaled = _CPU_AUTO_BATCH if not pixels else _CPU_AUTO_BATCH * _CPU_REFERENCE_PIXELS // pixels
    return min(max(_CPU_AUTO_BATCH, min(scaled, _CPU_AUTO_BATCH_MAX)), count)


def image_pixels(images: Any) -> int | None:
    """Height x width of an image set's pixels (an `ImageSet` or a (N, 3, H, W) tensor), None if unknown."""
    pixels = getattr(images, "pixels", images)
    shape = getattr(pixels, "shape", None)
    return int(shape[-1] * shape[-2]) if shape is not None and len(shape) == 4 else None


def _is_out_of_memory(error: BaseException) -> bool:
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom_type is not None and isinstance(error, oom_type)) or "out of memory" in str(error).lower()


def run_chunked(
    count: int,
    batch_size: int,
    work: Callable[[list[int]], Any],
    on_retry: Callable[[int], None] | None = None,
) -> list[Any]:
    """Run `work(indices)` over chunks of `batch_size`; on out-of-memory halve the chunk and retry."""
    outputs: list[Any] = []
    start = 0
    while start < count:
        indices = list(range(start, min(start + batch_size, count)))
        try:
            outputs.append(work(indices))
        except Exception as error:  # noqa: BLE001 - only OOM is handled, the rest re-raised
            if not _is_out_of_memory(error):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if batch_size == 1:
                raise ProbeFailure(f"out of memory at batch size 1 (image index {start}): {error}") from error
            batch_size = max(1, batch_size // 2)
            if on_retry is not None:
                on_retry(batch_size)
            continue
        start = indices[-1] + 1
    return outputs
