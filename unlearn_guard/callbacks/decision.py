"""The monitor's decision maths: the decisive value of an interval, the stop rule, the loss weight.

Every decision reads a probe's signal through one function, `decisive_value`: the interval's
*conservative* end, the end least favourable to the goal (`low` in mode "max", where the signal
should grow; `high` in mode "min"). So, as a release gate would:
  - the target counts as reached only when the whole interval is past it
    (low >= target in "max", high <= target in "min");
  - a probe is an improvement only when its conservative end beats the best conservative end
    so far by more than `min_delta`; `patience` counts the probes in a row that are not;
  - the loss weight reads the gap between the target and the conservative end.
A point estimate that moves inside an unchanged interval therefore changes no decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Mode = Literal["max", "min"]
StopReason = Literal["target", "patience"]
SignalName = Literal["memory", "d_n"]
SIGNALS: dict[str, Mode] = {"memory": "min", "d_n": "max"}  # each signal's direction of forgetting
SIGNAL_LABELS = {"memory": "memory score", "d_n": "d_N"}
# d_N = 1 means the concept's seeds are as likely as anything the model knows (SPEC 5): the
# default regularisation scale is the distance from there to the target.
REMEMBERS = 1.0  # both signals read 1 where the model remembers: M = 1, d_N = 1


@dataclass(frozen=True)
class Signal:
    """What the monitor decides on: a point value and its interval [low, high].

    The memory score or d_N with its bootstrap interval (`ProbeRecord.signal_of`); low/high are
    nan when the probe config turns the bootstrap off.
    """

    value: float
    low: float
    high: float


def decisive_value(signal: Signal, mode: Mode) -> float:
    """The interval's conservative end, the one number every decision reads.

    `low` in mode "max" (the signal should grow: the concept is forgotten once even the low end
    is high), `high` in mode "min"; the point value when that end is nan (no bootstrap).
    """
    end = signal.low if mode == "max" else signal.high
    return signal.value if math.isnan(end) else end


@dataclass(frozen=True)
class StopState:
    """Early stopping so far: the best conservative end b, the probes in a row that did not beat
    it, and the reason once the monitor decided to stop (it then stays)."""

    best: float | None = None
    wait: int = 0
    reason: StopReason | None = None


def next_stop_state(state: StopState, signal: Signal, *, mode: Mode, min_delta: float, target: float | None,
                    patience: int | None, target_counts: bool = True) -> StopState:
    """The stop state after one successful probe with `signal`.

    The best b is replaced when b beats it by more than `min_delta` (b > best + min_delta in
    "max", b < best - min_delta in "min"), else `wait` grows. Once no reason is set: "target"
    when b is past `target` and `target_counts` (a `PromptCheck` that passes, or none), else
    "patience" when `wait` reached `patience`.
    """
    bound = decisive_value(signal, mode)
    improved = state.best is None or (bound > state.best + min_delta if mode == "max" else bound < state.best - min_delta)
    best, wait = (bound, 0) if improved else (state.best, state.wait + 1)
    reason = state.reason
    if reason is None:
        reached = target is not None and (bound >= target if mode == "max" else bound <= target)
        if reached and target_counts:
            reason = "target"
        elif patience is not None and wait >= patience:
            reason = "patience"
    return StopState(best, wait, reason)


def regularization_weight(signal: Signal | None, *, mode: Mode, target: float | None, weight_min: float,
                          weight_max: float, scale: float | None) -> float:
    """w = w_min + (w_max - w_min) * clip(gap / scale, 0, 1), high while the concept is remembered.

    gap = target - b ("max") or b - target ("min"), b the conservative end of `signal`; scale
    defaults to |target - 1| (1 when that is 0). w_max without a signal or a target.
    """
    if signal is None or target is None:
        return weight_max
    bound = decisive_value(signal, mode)
    gap = target - bound if mode == "max" else bound - target
    scale = scale or (abs(target - REMEMBERS) or 1.0)
    fraction = min(max(gap / scale, 0.0), 1.0)
    return weight_min + (weight_max - weight_min) * fraction
