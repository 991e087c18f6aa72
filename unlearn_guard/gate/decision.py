"""The gate's decision: a checkpoint passes when it has forgotten the concept, on the safe side.

The verdict reads the memory score M (`unlearn_guard.signal`), calibrated on ground truth: a
checkpoint passes when the *upper* end of M's interval is at most `max_memory`, i.e. when even
the most memory the data allow is no more than the threshold separating the shipped world from
the world retrained without the concept (benchmarks/calibrate_memory_signal.py). With the bootstrap
turned off the point value decides, and the reason says so.

Optional extra conditions: `min_d_n` (the paper's d_N, SPEC 5; its lower end must reach it; d_N
alone is blind to whether seeds reconstruct anything, see the README) and `max_psnr` (mean
reconstruction PSNR of the concept's images). The gate passes when every checkpoint passes.
Each reason names the number, its interval, the threshold and the outcome.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..signal.calibration import DEFAULT_MAX_MEMORY


def _positive(value: Any, flag: str, upper: float | None = None) -> float:
    expected = "a positive number" if upper is None else f"a number in (0, {upper:g}]"
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{flag}: got {value!r}; expected {expected}") from None
    if not math.isfinite(number) or number <= 0 or (upper is not None and number > upper):
        raise InputError(f"{flag}: got {value!r}; expected {expected}")
    return number


@dataclass(frozen=True)
class Thresholds:
    """max_memory: pass when the memory score's upper end is at most it (0 < x <= 1; default calibrated;
    1 turns the rule off).
    min_d_n: optional, also require d_N's lower end >= it (> 0). max_psnr: optional upper bound on
    the concept images' mean PSNR (dB, > 0)."""

    max_memory: float = DEFAULT_MAX_MEMORY
    min_d_n: float | None = None
    max_psnr: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_memory", _positive(self.max_memory, "--max-memory", upper=1.0))
        if self.min_d_n is not None:
            object.__setattr__(self, "min_d_n", _positive(self.min_d_n, "--min-dn"))
        if self.max_psnr is not None:
            object.__setattr__(self, "max_psnr", _positive(self.max_psnr, "--max-psnr"))

    def to_dict(self) -> dict[str, Any]:
        return {"max_memory": self.max_memory, "min_d_n": self.min_d_n, "max_psnr": self.max_psnr,
                "rule": "pass when the upper end of the memory score's interval <= max_memory"
                        + (" and d_N's lower end >= min_d_n" if self.min_d_n is not None else "")
                        + (" and mean PSNR <= max_psnr" if self.max_psnr is not None else "")}


@dataclass(frozen=True)
class Decision:
    passed: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "passed": self.passed, "reasons": list(self.reasons)}


def _interval(value: float, low: float, high: float) -> str:
    return f"{value:.3f}" + ("" if math.isnan(low) else f" [{low:.3f}, {high:.3f}]")


def decide(entry: dict[str, Any], thresholds: Thresholds) -> Decision:
    """One checkpoint's decision from its record: `memory` (value, ci_low, ci_high or None),
    `d_n` / `ci_low` / `ci_high` (None when not computed) and `psnr_mean` (dB)."""
    reasons = []
    memory = entry.get("memory")
    if thresholds.max_memory >= 1.0:  # every score is <= 1: the rule is off
        passed = True
        shown = "not computed" if memory is None else _interval(*(float(memory[k]) for k in ("value", "ci_low", "ci_high")))
        reasons.append(f"memory M = {shown}: not checked (--max-memory 1 turns the memory rule off)")
    elif memory is None:
        passed = False
        reasons.append(f"memory score not computed ({'; '.join(entry.get('notes') or ['no reference set'])}): "
                       "cannot show that it forgot")
    else:
        value, low, high = (float(memory[k]) for k in ("value", "ci_low", "ci_high"))
        bound, which = (value, "point value (no interval)") if math.isnan(high) else (high, "upper end")
        passed = bool(bound <= thresholds.max_memory)
        relation = "<=" if passed else ">"
        outcome = "forgotten like a model that never saw it" if passed else "still remembers"
        reasons.append(f"memory M = {_interval(value, low, high)}: {which} {bound:.3f} {relation} "
                       f"{thresholds.max_memory:g} (max memory): {outcome}")
    if thresholds.min_d_n is not None:
        d_n = entry.get("d_n")
        if d_n is None:
            reasons.append("d_N not computed: cannot check --min-dn")
            passed = False
        else:
            low = float(entry["ci_low"])
            bound, which = (float(d_n), "point value") if math.isnan(low) else (low, "lower end")
            ok = bool(bound >= thresholds.min_d_n)
            reasons.append(f"d_N = {_interval(float(d_n), low, float(entry['ci_high']))}: {which} {bound:.3f} "
                           f"{'>=' if ok else '<'} {thresholds.min_d_n:g} (min d_N)")
            passed = passed and ok
    if thresholds.max_psnr is not None:
        psnr_mean = entry.get("psnr_mean")
        psnr_ok = psnr_mean is not None and bool(float(psnr_mean) <= thresholds.max_psnr)
        relation = "<=" if psnr_ok else ">"
        outcome = "reconstructions poor enough" if psnr_ok else "still reconstructs the concept's images"
        shown = "-" if psnr_mean is None else f"{float(psnr_mean):.2f}"
        reasons.append(f"mean PSNR = {shown} dB {relation} {thresholds.max_psnr:g} dB (max PSNR): {outcome}")
        passed = passed and psnr_ok
    return Decision(passed=passed, reasons=reasons)


def overall(decisions: dict[str, Decision]) -> Decision:
    """The gate passes when every checkpoint passes; reasons name the ones that failed."""
    failed = [name for name, decision in decisions.items() if not decision.passed]
    if not failed:
        return Decision(True, [f"all {len(decisions)} checkpoint(s) passed"])
    return Decision(False, [f"{len(failed)} of {len(decisions)} checkpoint(s) still remember: {', '.join(failed)}"])
