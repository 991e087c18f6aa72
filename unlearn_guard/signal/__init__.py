"""The calibrated decision signal beside d_N: the memory score (see `memory_score`)."""

from .calibration import DEFAULT_MAX_MEMORY
from .memory_score import DEFAULT_PSNR_MARGIN_DB, MemoryScoreResult, image_memory, memory_score

__all__ = ["DEFAULT_MAX_MEMORY", "DEFAULT_PSNR_MARGIN_DB", "MemoryScoreResult", "image_memory", "memory_score"]
