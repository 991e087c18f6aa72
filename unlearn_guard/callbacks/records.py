"""`ProbeRecord` (one probe during training, to and from JSON) and the checks on a saved monitor state."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..errors import InputError, InsufficientDataError, NonFiniteError
from ..results import ProbeResult
from ..validation import json_number
from .decision import SIGNAL_LABELS, Signal, SignalName
from .warnings import warn_probe

STATE_VERSION = 2  # 2: decisions on the interval's conservative end; name and failure counters


def optional_float(value: float | str | None) -> float | None:
    """A number read back from JSON (`json_number` writes nan/inf as strings); None stays None."""
    return None if value is None else float(value)


def _shown(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" + ("" if low is None or math.isnan(low) else f" [{low:.4f}, {high:.4f}]")


@dataclass(frozen=True)
class ProbeRecord:
    """One probe during training. A failed probe has `error` set and None for the numbers.

    `erased_nll_mean` / `erased_psnr_mean` are means over the concept images E (PSNR in dB);
    `ci_low` / `ci_high` bound d_N (nan when the probe config turns the bootstrap off);
    `seconds` is the wall time spent, failures included. With a `PromptCheck`, `prompt_success`
    is the share of the prompt's generations its judge called the concept (under its worst
    sampling setting, `prompt_setting`, e.g. "ddim g4.0 25 steps"); with separate
    `loss_images`, `loss_memory*` is the memory score on those images (what the memory loss
    trains on; the decisions never read it) and every other number is on `images` alone.
    `control_memory` is the negative control's memory score (None when the control is off): near 0
    when the probe can read memory in the model at this step.
    """

    step: int
    d_n: float | None
    ci_low: float | None
    ci_high: float | None
    erased_nll_mean: float | None
    erased_psnr_mean: float | None
    seconds: float
    error: str | None = None
    memory: float | None = None
    memory_low: float | None = None
    memory_high: float | None = None
    diverged: int = 0
    prompt_success: float | None = None
    loss_memory: float | None = None
    loss_memory_low: float | None = None
    loss_memory_high: float | None = None
    control_memory: float | None = None
    prompt_setting: str | None = None

    @classmethod
    def failed(cls, step: int, seconds: float, error: BaseException) -> "ProbeRecord":
        """The record of a probe that raised `error`: no numbers, the error's type and message."""
        return cls(step, None, None, None, None, None, seconds, f"{type(error).__name__}: {error}")

    @property
    def ok(self) -> bool:
        return self.error is None

    def describe(self) -> str:
        """Both signals with their intervals, for the log: "memory M = 0.8000 [0.7000, 0.9000], d_N = ..."."""
        control = "" if self.control_memory is None else f", control M = {self.control_memory:.4f}"
        return (f"memory M = {_shown(self.memory, self.memory_low, self.memory_high)}{control}, "
                f"d_N = {_shown(self.d_n, self.ci_low, self.ci_high)}")

    def signal_of(self, name: SignalName) -> Signal | None:
        """The memory score or d_N with its interval; None for a failed probe or one without it."""
        value, low, high = (self.memory, self.memory_low, self.memory_high) if name == "memory" else (
            self.d_n, self.ci_low, self.ci_high)
        if not self.ok or value is None:
            return None
        return Signal(value, math.nan if low is None else low, math.nan if high is None else high)

    @classmethod
    def from_result(cls, step: int, result: ProbeResult, seconds: float, signal: SignalName = "memory", *,
                    prompt_success: float | None = None, loss_result: ProbeResult | None = None,
                    prompt_setting: str | None = None) -> "ProbeRecord":
        """A record of `result`; raises when the signal the monitor decides on is missing or not finite.

        `prompt_success`: the `PromptCheck`'s share (its worst setting's, `prompt_setting`, by label);
        `loss_result`: the probe of separate
        `loss_images`, whose memory score fills `loss_memory*`.
        """
        md, memory = result.memory_distance, result.memory
        deciding = memory if signal == "memory" else md
        if deciding is None:
            why = "; ".join(result.notes) or "no reference set"
            raise InsufficientDataError(f"the probe at step {step} returned no {SIGNAL_LABELS[signal]} ({why})")
        if not math.isfinite(deciding.value):
            raise NonFiniteError(f"{SIGNAL_LABELS[signal]} = {deciding.value} at step {step}; expected a finite number")
        summary = result.erased.summary()

        def number(value: Any) -> float | None:
            return None if value is None else float(value)

        loss_memory = None if loss_result is None else loss_result.memory
        return cls(step, number(md and md.value), number(md and md.ci_low), number(md and md.ci_high),
                   number(summary["nll_mean"]), number(summary["psnr_mean"]), seconds,
                   memory=number(memory and memory.value), memory_low=number(memory and memory.ci_low),
                   memory_high=number(memory and memory.ci_high), diverged=int(summary["diverged"]),
                   prompt_success=prompt_success, loss_memory=number(loss_memory and loss_memory.value),
                   loss_memory_low=number(loss_memory and loss_memory.ci_low),
                   loss_memory_high=number(loss_memory and loss_memory.ci_high),
                   control_memory=number(result.control_memory and result.control_memory.value),
                   prompt_setting=prompt_setting)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {key: json_number(value) if isinstance(value, float) else value for key, value in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ProbeRecord":
        numbers = ("d_n", "ci_low", "ci_high", "erased_nll_mean", "erased_psnr_mean", "memory", "memory_low",
                   "memory_high", "prompt_success", "loss_memory", "loss_memory_low", "loss_memory_high", "control_memory")
        return cls(
            step=int(data["step"]),
            **{name: optional_float(data.get(name)) for name in numbers},
            seconds=float(data["seconds"]),
            error=data.get("error"),
            diverged=int(data.get("diverged") or 0),
            prompt_setting=data.get("prompt_setting"),
        )


def check_saved_state(state: dict[str, Any], name: str, mode: str) -> int:
    """The version of a monitor state, checked against the monitor `name` restoring it.

    Raises `InputError` for an unknown version or a state saved by another monitor; warns when
    the state was saved with another `mode` (its counters would then mean something else).
    """
    version = state.get("version")
    if version not in (1, STATE_VERSION):
        raise InputError(f"monitor state version {version!r}; expected 1 or {STATE_VERSION}")
    saved_name = state.get("name", name)
    if saved_name != name:
        raise InputError(f"monitor state belongs to monitor {saved_name!r}; this monitor is {name!r} "
                         "(restore each monitor's own state: register or list them in the same order)")
    saved_mode = state.get("config", {}).get("mode", mode)
    if saved_mode != mode:
        warn_probe(f"monitor state was saved with mode={saved_mode!r}; this monitor uses mode={mode!r}")
    return version
