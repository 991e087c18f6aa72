"""The memory score's calibrated thresholds, measured on ground truth in the small world.

Ground truth: the shipped world (knows every shape) against the world retrained without one
shape (`unlearn-guard train-world --exclude SHAPE`, shipped for circle and square), probed with
`mofc` on concept images that no threshold saw before (benchmarks/calibrate_memory_signal.py;
its table in benchmarks/RESULTS.md).

DEFAULT_MAX_MEMORY: the gate passes a checkpoint when the upper end of the memory score's 95%
interval is at most it. Tuned on the benchmark's `tune` split only: midway between the highest
memory score of a retrained world and the lowest of the original world. The numbers behind it,
and how it reads on the held-out split that nothing was tuned on (original, retrained, ESD models
and out-of-world images), are in benchmarks/RESULTS.md and docs/memory-score.md.
"""

from __future__ import annotations

DEFAULT_MAX_MEMORY = 0.404  # benchmarks/calibrate_memory_signal.py (RESULTS.md)
