"""The gate's decision: a checkpoint passes when it has forgotten enough.

Pass when d_N >= min_d_n (SPEC 5: d_N near 1 means the concept's seeds are as likely as anything
the model knows, i.e. it still remembers) and, when `max_psnr` is set, when the mean
reconstruction PSNR of the concept's images is <= max_psnr (a model that still reconstructs the
concept's images well from its own seeds can still draw them). The gate passes when every
checkpoint passes. Each reason names the number, the threshold and the outcome.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError


def _positive(value: Any, flag: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{flag}: got {value!r}; expected a positive number") from None
    if not math.isfinite(number) or number <= 0:
        raise InputError(f"{flag}: got {value!r}; expected a positive number")
    return number


@dataclass(frozen=True)
class Thresholds:
    """min_d_n: required, > 0. max_psnr: optional upper bound on the mean PSNR (dB), > 0."""

    min_d_n: float
    max_psnr: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "min_d_n", _positive(self.min_d_n, "--min-dn"))
        if self.max_psnr is not None:
            object.__setattr__(self, "max_psnr", _positive(self.max_psnr, "--max-psnr"))

    def to_dict(self) -> dict[str, Any]:
        return {"min_d_n": self.min_d_n, "max_psnr": self.max_psnr}


@dataclass(frozen=True)
class Decision:
    passed: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "passed": self.passed, "reasons": list(self.reasons)}


def decide(d_n: float, psnr_mean: float, thresholds: Thresholds) -> Decision:
    """One checkpoint's decision from its d_N and mean concept PSNR (dB)."""
    reasons = []
    passed = bool(d_n >= thresholds.min_d_n)  # nan compares False: fails
    relation = ">=" if passed else "<"
    outcome = "forgotten enough" if passed else "still remembers"
    reasons.append(f"d_N = {d_n:.3f} {relation} {thresholds.min_d_n:g} (min d_N): {outcome}")
    if thresholds.max_psnr is not None:
        psnr_ok = bool(psnr_mean <= thresholds.max_psnr)
        relation = "<=" if psnr_ok else ">"
        outcome = "reconstructions poor enough" if psnr_ok else "still reconstructs the concept's images"
        reasons.append(f"mean PSNR = {psnr_mean:.2f} dB {relation} {thresholds.max_psnr:g} dB (max PSNR): {outcome}")
        passed = passed and psnr_ok
    return Decision(passed=passed, reasons=reasons)


def overall(decisions: dict[str, Decision]) -> Decision:
    """The gate passes when every checkpoint passes; reasons name the ones that failed."""
    failed = [name for name, decision in decisions.items() if not decision.passed]
    if not failed:
        return Decision(True, [f"all {len(decisions)} checkpoint(s) passed"])
    return Decision(False, [f"{len(failed)} of {len(decisions)} checkpoint(s) still remember: {', '.join(failed)}"])
