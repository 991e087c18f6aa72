"""The calibrated decision signal beside d_N: the memory score (see `memory_score`)."""

from .memory_score import DEFAULT_PSNR_MARGIN_DB, MemoryScoreResult, image_memory, memory_score

__all__ = ["DEFAULT_PSNR_MARGIN_DB", "MemoryScoreResult", "image_memory", "memory_score"]
