"""`MonitorConfig`: when the monitor probes, with what, and when it stops; validated, JSON round trip."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Literal

from ..config import ProbeConfig
from ..probe import resolve_config
from ..validation import require_field
from .decision import SIGNALS, Mode, SignalName

FailureAction = Literal["disable", "raise"]
LogFn = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class MonitorConfig:
    """When to probe, with what, and when to stop.

    Decisions read the conservative end of each probe's interval, b (low in mode "max", high in
    "min"; see `unlearn_guard.callbacks.decision`).

    Args:
        every_n_steps: probe when `step % every_n_steps == 0` (step 0 included, once per step).
        probe: a `ProbeConfig` or a preset name; a name gets `progress=False` (no bars in logs).
        signal: what the decisions read: "memory" (the memory score M, calibrated on a model
            retrained without the concept; `unlearn_guard.signal`) or "d_n" (the paper's d_N).
        target: stop once b reaches it (b <= target for "memory", b >= target for "d_n"), i.e.
            once the whole interval is past it; None: never. For the memory score, the
            calibrated gate threshold (`unlearn_guard.signal.DEFAULT_MAX_MEMORY`) makes training
            stop where the release gate would pass.
        patience: stop after this many probes in a row without improvement; None: never.
        min_delta: an improvement must beat the best b so far by more than this.
        mode: "min" (the signal should shrink) or "max" (grow); None: the signal's own ("min"
            for the memory score, which falls as the concept is forgotten; "max" for d_N).
        regularization_max / regularization_min / regularization_scale: the weight schedule,
            w = w_min + (w_max - w_min) * clip(gap / scale, 0, 1), with gap = target - b in
            mode "max" (b - target in "min") for the latest successful probe, and scale
            defaulting to |target - 1| (1 when that is 0): b = 1 (still remembers, on either
            signal) gives w_max, the target gives w_min. Before the first successful probe, or without a
            target, w = w_max.
        fatal: re-raise the first probe failure instead of recording it and going on.
        max_consecutive_failures: after this many failed probes in a row, `on_max_failures`
            happens; None: failures never end monitoring.
        on_max_failures: "disable" (warn, stop probing, let training go on) or "raise"
            (`ProbeFailure` from the last error, into the training loop).
        log_fn: called with each record's dict (e.g. `wandb.log`); not serialised.
    """

    every_n_steps: int = 100
    probe: ProbeConfig | str = "track"
    signal: SignalName = "memory"
    target: float | None = None
    patience: int | None = None
    min_delta: float = 0.0
    mode: Mode | None = None
    regularization_max: float = 1.0
    regularization_min: float = 0.0
    regularization_scale: float | None = None
    fatal: bool = False
    max_consecutive_failures: int | None = None
    on_max_failures: FailureAction = "disable"
    log_fn: LogFn | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        require_field("MonitorConfig", isinstance(self.every_n_steps, int) and self.every_n_steps >= 1,
                 "every_n_steps", self.every_n_steps, "an int >= 1")
        if isinstance(self.probe, str):
            object.__setattr__(self, "probe", resolve_config(self.probe, {"progress": False}))
        require_field("MonitorConfig", isinstance(self.probe, ProbeConfig), "probe", self.probe, "a ProbeConfig or a preset name")
        require_field("MonitorConfig", self.signal in SIGNALS, "signal", self.signal, " or ".join(repr(k) for k in SIGNALS))
        if self.mode is None:
            object.__setattr__(self, "mode", SIGNALS[self.signal])
        require_field("MonitorConfig", self.mode in ("max", "min"), "mode", self.mode, "'max', 'min' or None (the signal's own)")
        require_field("MonitorConfig", self.target is None or (isinstance(self.target, (int, float)) and math.isfinite(self.target)),
                 "target", self.target, "None or a finite number")
        require_field("MonitorConfig", self.patience is None or (isinstance(self.patience, int) and self.patience >= 1),
                 "patience", self.patience, "None or an int >= 1")
        require_field("MonitorConfig", self.min_delta >= 0, "min_delta", self.min_delta, "a number >= 0")
        require_field("MonitorConfig", 0 <= self.regularization_min <= self.regularization_max, "regularization_min",
                 (self.regularization_min, self.regularization_max), "0 <= regularization_min <= regularization_max")
        require_field("MonitorConfig", self.regularization_scale is None or self.regularization_scale > 0,
                 "regularization_scale", self.regularization_scale, "None or a number > 0")
        require_field("MonitorConfig", self.max_consecutive_failures is None
                 or (isinstance(self.max_consecutive_failures, int) and self.max_consecutive_failures >= 1),
                 "max_consecutive_failures", self.max_consecutive_failures, "None or an int >= 1")
        require_field("MonitorConfig", self.on_max_failures in ("disable", "raise"), "on_max_failures", self.on_max_failures,
                 "'disable' or 'raise'")
        require_field("MonitorConfig", self.log_fn is None or callable(self.log_fn), "log_fn", self.log_fn, "None or a callable")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields (log_fn left out)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "log_fn"}
        data["probe"] = self.probe.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MonitorConfig":
        data = dict(data)
        if isinstance(data.get("probe"), dict):
            data["probe"] = ProbeConfig.from_dict(data["probe"])
        return cls(**data)
