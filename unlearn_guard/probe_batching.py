"""Chunked work with an out-of-memory fallback: the probe's batch size, and a loop that halves the
chunk and retries when CUDA runs out of memory. Results do not depend on the chunking because
every random draw comes from per-image generators (`probe_seeds`)."""

from __future__ import annotations

from typing import Any, Callable

import torch

from .config import ProbeConfig
from .errors import ProbeFailure

_CPU_AUTO_BATCH = 4
_CUDA_AUTO_BATCH = 16


def auto_batch_size(config: ProbeConfig, device: torch.device, count: int) -> int:
    """Images per chunk: the config's batch_size, or a default for the device; at most `count`."""
    if config.batch_size is not None:
        return min(config.batch_size, count)
    return min(_CUDA_AUTO_BATCH if device.type == "cuda" else _CPU_AUTO_BATCH, count)


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
