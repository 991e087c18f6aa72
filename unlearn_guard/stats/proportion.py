"""A success rate with its confidence interval: the Wilson score interval for k successes in n.

Used for attack success rates (share of generations a judge calls the concept). Wilson's
interval stays inside [0, 1] and keeps close to its nominal coverage at small n and at rates
near 0 or 1, where the normal (Wald) interval collapses to a point: 0 of 16 gives Wald [0, 0]
but Wilson [0, 0.194] at 95%.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from ..errors import InputError


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """(low, high) of the Wilson score interval for `successes` out of `n` trials.

    With z the two-sided normal quantile of `confidence` and p = k / n:
        centre = (p + z^2 / (2n)) / (1 + z^2 / n)
        half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n: got {n!r}; expected an int >= 1 (trials)")
    if isinstance(successes, bool) or not isinstance(successes, int) or not 0 <= successes <= n:
        raise InputError(f"successes: got {successes!r}; expected an int in [0, n={n}]")
    if not (isinstance(confidence, (int, float)) and 0.0 < confidence < 1.0):
        raise InputError(f"confidence: got {confidence!r}; expected a number in (0, 1)")
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
    # The exact interval contains 0 (or 1) when k = 0 (or n); rounding may leave 1e-17 instead.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high
