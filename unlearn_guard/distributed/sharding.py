"""How units of work are cut across ranks: contiguous, in order, balanced by weight.

Results do not depend on the number of ranks when the work is cut where a one-process run cuts it
(units are kept whole and in order), so every image is computed in the same batch.
"""

from __future__ import annotations

from typing import Sequence


def shard_bounds(weights: Sequence[float], world_size: int) -> list[range]:
    """Contiguous, weight-balanced slices of `len(weights)` units, one per rank (some may be empty).

    Unit i goes to the rank whose share of the total holds the unit's midpoint, so the slices
    keep the units' order and each holds about total / world_size of the weight.
    """
    total = float(sum(weights))
    owners = []
    before = 0.0
    for weight in weights:
        middle = (before + weight / 2) / total if total > 0 else 0.0
        owners.append(min(world_size - 1, int(middle * world_size)))
        before += weight
    return [range(owners.index(r), len(owners) - owners[::-1].index(r)) if r in owners else range(0) for r in
            range(world_size)]
