"""The memory score's calibrated thresholds, measured on ground truth in the small world.

Ground truth: the shipped world (knows every shape) against the world retrained without one
shape (`unlearn-guard train-world --exclude SHAPE`, shipped for circle and square), probed with
`mofc` on concept images that no threshold saw before (benchmarks/calibrate_memory_signal.py;
its table in benchmarks/RESULTS.md).

DEFAULT_MAX_MEMORY: the gate passes a checkpoint when the upper end of the memory score's 95%
interval is at most it. Tuned on the benchmark's `tune` split only (12 + 12 images per model and
concept): midway between the highest memory score of a retrained world (circle 0.083, square 0.000)
and the lowest of the original world (square 0.726, circle 0.789): (0.083 + 0.726) / 2 = 0.404.
On the held-out split that nothing was tuned on, at this threshold: the original worlds remember
(upper ends 0.981 and 0.975), the retrained worlds do not (0.250 and 0.000), and neither do stars
(0.393, 0.377) or uniform noise (0.000) on the original world. Five ESD models per concept
fall between the ends (held-out M: circle 0.61 to 0.67, square 0.19 to 0.39).
"""

from __future__ import annotations

DEFAULT_MAX_MEMORY = 0.404  # benchmarks/calibrate_memory_signal.py, 2026-11-29 (RESULTS.md)
