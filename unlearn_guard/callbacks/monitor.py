"""`ProbeMonitor`: probe the model being trained every N steps; early stopping and a loss weight.

The framework-agnostic core of the training callbacks (SPEC 5 for d_N). A training loop calls
`monitor.maybe_probe(step)` (or `monitor.step(step)`) after each optimizer step; every
`every_n_steps` steps the monitor probes the *same* modules the loop updates, records the
outcome, and updates three signals:
  - `should_stop`: the target is reached, or `patience` probes in a row brought no improvement;
  - `regularization_weight`: a weight for a memory-aware loss term that shrinks as the signal
    nears the target (formula in `MonitorConfig`);
  - `history`: one `ProbeRecord` per probe, failures included.

What it decides on, and how. Each successful probe records two signals with their bootstrap
intervals: the memory score M (`unlearn_guard.signal`, calibrated on a model retrained without the
concept; the default, `MonitorConfig(signal="memory")`, falling as the concept is forgotten) and
the paper's d_N (SPEC 5; `signal="d_n"`). Every decision reads the chosen signal through
one function, `decisive_value`: the interval's *conservative* end, the end least favourable to
the goal (`low` in mode "max", where the signal should grow; `high` in mode "min"). So, as a
release gate would:
  - the target counts as reached only when the whole interval is past it
    (low >= target in "max", high <= target in "min");
  - a probe is an improvement only when its conservative end beats the best conservative end
    so far by more than `min_delta` (low > best_low + min_delta in "max"; high < best_high -
    min_delta in "min"); `patience` counts the probes in a row that are not;
  - the loss weight reads the gap between the target and the conservative end.
A point estimate that moves inside an unchanged interval therefore changes no decision.
How many images that takes, measured with `fast` on the shipped world model (5 image sets per
size, `benchmarks/decision_interval.py`; table in the README): the 95% interval is 0.069 / 0.064 /
0.053 wide at 4+4 / 8+8 / 16+16 images, while d_N varies across image sets with sd 0.031 / 0.021 /
0.004. So at 4+4 the interval does not cover the choice of images; use at least 8+8 (16+16 at
3x the probe time) and a `min_delta` near the half width (0.03).
Without an interval (`bootstrap_samples=0`) the point value is used (with a warning).

A probe never breaks training: any `Exception` (out of memory, `NonFiniteError`, a bad device)
is recorded in the history with its message and reported with a `ProbeWarning` attributed to
the caller's line (the training loop, `trainer.train()` or `trainer.fit()`), unless `fatal=True`.
`max_consecutive_failures` sits in between: after that many failures in a row the monitor stops
probing (`on_max_failures="disable"`) or raises `ProbeFailure` ("raise"). `KeyboardInterrupt`
always propagates. What can be checked before training (the model's parts on one device, a
Triton backend that can run) is checked when the monitor is built (`check()`; the adapters run it
again when training starts, after the framework has moved the model). Probing leaves weights,
`requires_grad` flags, train/eval modes and the global random streams as it found them.

Two guards against a memory loss that games the probe (both measured to be needed, README
"Memory-aware erasure"): `loss_images` keeps the images the loss trains on apart from the
images every decision reads, and a `PromptCheck` lets the target count only when the concept's
own prompt no longer draws it.

Several monitors can watch one run (two concepts, two presets): each has a `name` that prefixes
its logged metrics (`metrics(record)` gives {"<name>/memory", "<name>/d_n", ...}) and keys its saved state.

    monitor = ProbeMonitor(model, concept_images, "a parachute",      # target: the gate's calibrated threshold
                           reference=reference_images, reference_prompts="a photo",
                           config=MonitorConfig(every_n_steps=100, target=DEFAULT_MAX_MEMORY, patience=5))
    for step in range(1, max_steps + 1):
        loss = esd_loss(batch) + monitor.regularization_weight * memory_loss(batch)
        loss.backward(); optimizer.step(); optimizer.zero_grad()
        if monitor.step(step):          # probes when step % 100 == 0; True once it says stop
            break
    torch.save({"unet": unet.state_dict(), "monitor": monitor.state_dict()}, "ckpt.pt")
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch

from .. import distributed as distributed_work
from ..config import ProbeConfig
from ..errors import InputError, InsufficientDataError, NonFiniteError
from ..validation import json_number, require_field
from ..io import ImageSet, ImagesInput, PromptsInput, load_image_set
from ..kernels.dispatch import resolve_backend
from ..models.bundle import DiffusionModel
from ..probe import ProbeFailure, as_model, measure_memory, probe, resolve_config
from ..results import ProbeResult, SetProbe
from .prompt_check import PromptCheck

logger = logging.getLogger("unlearn_guard.callbacks")

Mode = Literal["max", "min"]
StopReason = Literal["target", "patience"]
FailureAction = Literal["disable", "raise"]
ProbeFn = Callable[[DiffusionModel, ImageSet, ImageSet, ProbeConfig], ProbeResult]
LogFn = Callable[[dict[str, Any]], None]

# d_N = 1 means the concept's seeds are as likely as anything the model knows (SPEC 5): the
# default regularisation scale is the distance from there to the target.
REMEMBERS = 1.0  # both signals read 1 where the model remembers: M = 1, d_N = 1
SignalName = Literal["memory", "d_n"]
SIGNALS: dict[str, Mode] = {"memory": "min", "d_n": "max"}  # each signal's direction of forgetting
SIGNAL_LABELS = {"memory": "memory score", "d_n": "d_N"}
DEFAULT_NAME = "probe"
# A monitor's name prefixes metric keys ("<name>/d_n") that every logger must accept.
_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*")
_STATE_VERSION = 2  # 2: decisions on the interval's conservative end; name and failure counters

# Frames skipped when a ProbeWarning names its caller: this package, and the frameworks whose
# loops call the adapters (so a warning points at the user's loop, trainer.train() or .fit()).
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_FRAMEWORKS = ("transformers", "lightning", "pytorch_lightning", "accelerate", "torch")


class ProbeWarning(UserWarning):
    """A probe failed during training; the monitor recorded it and training went on."""


def _warn(message: str) -> None:
    """`warnings.warn(message, ProbeWarning)` attributed to the first frame outside unlearn_guard
    and the training frameworks: the line of the user's code that led here."""
    prefixes = [_PACKAGE_DIR]
    for name in _FRAMEWORKS:
        file = getattr(sys.modules.get(name), "__file__", None)
        if file:
            prefixes.append(os.path.dirname(os.path.abspath(file)) + os.sep)
    frame, level = sys._getframe(0), 1  # level 1 is this function, as warnings.warn counts
    while frame is not None and frame.f_code.co_filename.startswith(tuple(prefixes)):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, ProbeWarning, stacklevel=level)


def _from_json_float(value: float | str | None) -> float | None:
    return None if value is None else float(value)


def _shown(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" + ("" if low is None or math.isnan(low) else f" [{low:.4f}, {high:.4f}]")


# ------------------------------------------------------------------------------ the signal
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


def _beats(value: float, than: float, margin: float, mode: Mode) -> bool:
    return value > than + margin if mode == "max" else value < than - margin


# ------------------------------------------------------------------------------ config and records
@dataclass(frozen=True)
class MonitorConfig:
    """When to probe, with what, and when to stop.

    Decisions read the conservative end of each probe's interval, b (low in mode "max", high in
    "min"; see the module docstring and `decisive_value`).

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


@dataclass(frozen=True)
class ProbeRecord:
    """One probe during training. A failed probe has `error` set and None for the numbers.

    `erased_nll_mean` / `erased_psnr_mean` are means over the concept images E (PSNR in dB);
    `ci_low` / `ci_high` bound d_N (nan when the probe config turns the bootstrap off);
    `seconds` is the wall time spent, failures included. With a `PromptCheck`, `prompt_success`
    is the share of the prompt's generations its judge called the concept; with separate
    `loss_images`, `loss_memory*` is the memory score on those images (what the memory loss
    trains on; the decisions never read it) and every other number is on `images` alone.
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

    @property
    def ok(self) -> bool:
        return self.error is None

    def signal_of(self, name: SignalName) -> Signal | None:
        """The memory score or d_N with its interval; None for a failed probe or one without it."""
        value, low, high = (self.memory, self.memory_low, self.memory_high) if name == "memory" else (
            self.d_n, self.ci_low, self.ci_high)
        if not self.ok or value is None:
            return None
        return Signal(value, math.nan if low is None else low, math.nan if high is None else high)

    @classmethod
    def from_result(cls, step: int, result: ProbeResult, seconds: float, signal: SignalName = "memory") -> "ProbeRecord":
        """A record of `result`; raises when the signal the monitor decides on is missing or not finite."""
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

        return cls(step, number(md and md.value), number(md and md.ci_low), number(md and md.ci_high),
                   number(summary["nll_mean"]), number(summary["psnr_mean"]), seconds,
                   memory=number(memory and memory.value), memory_low=number(memory and memory.ci_low),
                   memory_high=number(memory and memory.ci_high), diverged=int(summary["diverged"]))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {key: json_number(value) if isinstance(value, float) else value for key, value in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ProbeRecord":
        numbers = ("d_n", "ci_low", "ci_high", "erased_nll_mean", "erased_psnr_mean", "memory", "memory_low",
                   "memory_high", "prompt_success", "loss_memory", "loss_memory_low", "loss_memory_high")
        return cls(
            step=int(data["step"]),
            **{name: _from_json_float(data.get(name)) for name in numbers},
            seconds=float(data["seconds"]),
            error=data.get("error"),
            diverged=int(data.get("diverged") or 0),
        )


def default_probe_fn(model: DiffusionModel, images: ImageSet, reference: ImageSet, config: ProbeConfig,
                     distributed: bool | None = False) -> ProbeResult:
    """What the monitor runs by default: `probe(model, E, reference=R, config=config, distributed=...)`."""
    return probe(model, images, reference=reference, config=config, distributed=distributed)


def _joined(first: ImageSet, second: ImageSet) -> ImageSet:
    """One set, `first` then `second`: one probe call for both (per-image generators follow the
    index, so `first`'s numbers equal a probe of `first` alone)."""
    return ImageSet(torch.cat([first.pixels, second.pixels]), first.names + second.names,
                    first.prompts + second.prompts, first.sources + second.sources, first.sha256 + second.sha256)


def _split(result: ProbeResult, count: int, config: ProbeConfig) -> tuple[ProbeResult, ProbeResult]:
    """A probe of joined sets as two results, the first `count` images and the rest, each with
    its own d_N and memory score against the same R and N sets."""
    parts = []
    for rows in (slice(0, count), slice(count, None)):
        erased = result.erased
        part = SetProbe(erased.label, erased.images[rows], erased.unet_evaluations, erased.seconds,
                        None if erased.seeds is None else erased.seeds[rows],
                        None if erased.reconstructions is None else erased.reconstructions[rows])
        distance, memory, notes = (None, None, list(result.notes)) if result.reference is None else \
            measure_memory(part, result.reference, result.normal_nll, config)
        parts.append(dataclasses.replace(result, erased=part, memory_distance=distance, memory=memory, notes=notes))
    return parts[0], parts[1]


# ------------------------------------------------------------------------------ the monitor
class ProbeMonitor:
    """Probes a model every N training steps; records d_N, decides when to stop, weights a loss.

    Args:
        model: the `DiffusionModel` being trained (or a diffusers pipeline); it must hold the very
            UNet the loop updates (a peft/compile/DDP wrapper is fine), so probes see current weights.
        images / prompts: the erased concept's images E and their prompts (any form `probe` takes).
        reference / reference_prompts: the reference set R (other content); needed for d_N.
        config: a `MonitorConfig` (default: every 100 steps, preset "track", no early stop).
        probe_fn: replaces the measurement (tests, custom probes); same arguments as
            `default_probe_fn`.
        name: prefixes the logged metrics ("<name>/d_n") and keys the saved state; give each
            monitor of one run its own (letters, digits, "_", ".", "-", "/" between parts).
        distributed: in a DDP / accelerate run (an initialised process group of 2+ ranks), None
            (default) or True splits each probe across the ranks: every rank calls `step` /
            `maybe_probe` at the same steps, probes its share of the images, and gets the same
            result, so the records and decisions (stop, weight) are the same everywhere and a
            failure on one rank is recorded on all (`RankFailure` naming it). False: this process
            probes alone (call it on one rank only). Ignored with a custom `probe_fn`.
        loss_images / loss_prompts: the concept images a memory loss trains on, kept apart from
            `images`. Each probe inverts both in one call (`images` first, so their numbers equal
            a probe of `images` alone); `latest_seeds` are then the seeds of `loss_images`, and
            every decision (stop, weight, logged memory and d_N) reads `images` alone, which
            the loss never sees; the record's `loss_memory` shows the score on the loss's own
            images. Measured: a loss can bring its training images' score to the target while
            other images of the concept still remember, so an early stop read on them is no
            verdict. None (default): the loss trains on `images`.
        prompt_check: a `PromptCheck` (prompt, judge, max_success): at every probe, generate
            from the concept's prompt and count the concept; the target then counts as reached
            only when that share is at most `max_success` too. None: the memory signal alone.

    Built once, checked once: images are validated and resized here (to the model's resolution;
    both sets need at least 2 images), and `check()` runs (parts on one device, a backend that
    can run there).

        monitor = ProbeMonitor(model, concept, "a parachute", reference=ref, reference_prompts="a photo",
                               config=MonitorConfig(every_n_steps=50, target=0.5))
        record = monitor.maybe_probe(step)  # a ProbeRecord on multiples of 50, else None
        loss = esd_loss + monitor.regularization_weight * memory_loss
        if monitor.should_stop: ...
    """

    def __init__(
        self,
        model: Any,
        images: ImagesInput,
        prompts: PromptsInput = None,
        *,
        reference: ImagesInput,
        reference_prompts: PromptsInput = None,
        config: MonitorConfig | None = None,
        probe_fn: ProbeFn | None = None,
        name: str = DEFAULT_NAME,
        distributed: bool | None = None,
        loss_images: ImagesInput | None = None,
        loss_prompts: PromptsInput = None,
        prompt_check: PromptCheck | None = None,
    ) -> None:
        self.config = config if config is not None else MonitorConfig()
        if not isinstance(self.config, MonitorConfig):
            raise InputError(f"config: got {type(self.config).__name__}, expected a MonitorConfig")
        if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
            raise InputError(f"name: got {name!r}; expected letters, digits, '_', '.', '-', with '/' between parts")
        self.name = name
        self.model = as_model(model)
        self.check()
        probe_config = self.config.probe
        self.images = load_image_set(images, prompts, resolution=self.model.resolution,
                                     resize=probe_config.resize, label="images")
        self.reference = load_image_set(reference, reference_prompts, resolution=self.model.resolution,
                                        resize=probe_config.resize, label="reference")
        for label, part in (("images (E)", self.images), ("reference (R)", self.reference)):
            if len(part) < 2:
                raise InsufficientDataError(f"d_N needs at least 2 images in each set; {label} has {len(part)}")
        self._loss_images: ImageSet | None = None
        if loss_images is not None:
            self._loss_images = load_image_set(loss_images, loss_prompts, resolution=self.model.resolution,
                                               resize=probe_config.resize, label="loss_images")
            shared = set(self._loss_images.sha256) & set(self.images.sha256)
            if shared:
                raise InputError(f"loss_images: {len(shared)} image(s) also in images, e.g. "
                                 f"{self._loss_images.names[self._loss_images.sha256.index(next(iter(shared)))]}; "
                                 "the decisions read images the memory loss never sees, so the two sets must differ")
        elif loss_prompts is not None:
            raise InputError("loss_prompts: given without loss_images")
        if prompt_check is not None and not isinstance(prompt_check, PromptCheck):
            raise InputError(f"prompt_check: got {type(prompt_check).__name__}; expected a PromptCheck or None")
        self.prompt_check = prompt_check
        deciding = self.config.target is not None or self.config.patience is not None
        if deciding and probe_config.bootstrap_samples == 0:
            _warn(f"monitor {name!r}: the probe config has bootstrap_samples=0, so there is no interval and "
                  f"early stopping decides on the point estimate of the {SIGNAL_LABELS[self.config.signal]}")
        self.probe_fn: ProbeFn = probe_fn or default_probe_fn
        if distributed is not None and not isinstance(distributed, bool):
            raise InputError(f"distributed: got {distributed!r}; expected True, False or None (detect a process group)")
        self.distributed = distributed
        self.history: list[ProbeRecord] = []
        self._best: float | None = None
        self._wait = 0
        self._stop_reason: StopReason | None = None
        self._overhead = 0.0
        self._failures = 0
        self._consecutive_failures = 0
        self._disabled = False
        self._latest_seeds: torch.Tensor | None = None
        self._latest_seeds_step: int | None = None

    def check(self) -> None:
        """Raise now what would make every probe fail: model parts on different devices or with
        mismatched dtypes (`ModelError`), a `backend` that cannot run on the model's device
        (`InputError`, e.g. "triton" on CPU without TRITON_INTERPRET=1)."""
        self.model.check()
        resolve_backend(self.config.probe.backend, torch.empty(0, device=self.model.device),
                        op=f"ProbeMonitor {self.name!r}")

    # ------------------------------------------------------------------ probing
    def maybe_probe(self, step: int) -> ProbeRecord | None:
        """Probe when `step % every_n_steps == 0`, this step has not been probed yet, and the
        monitor is active (see `max_consecutive_failures`)."""
        if step % self.config.every_n_steps != 0 or self._disabled:
            return None
        if self.history and self.history[-1].step == step:
            return None  # gradient accumulation and resumes call again with the same step
        return self.probe_now(step)

    def step(self, step: int) -> bool:
        """`maybe_probe(step)`, then `should_stop`: the one call a plain loop needs."""
        self.maybe_probe(step)
        return self.should_stop

    def probe_now(self, step: int) -> ProbeRecord:
        """Probe now, record the outcome and update the stop and weight signals.

        Failures are recorded (d_N None, `error` set) and warned about, re-raised with
        `fatal=True`, or end monitoring after `max_consecutive_failures`; `KeyboardInterrupt`
        always propagates.
        """
        started = time.perf_counter()
        try:
            result, loss_result, success = self._run_probe()
            record = ProbeRecord.from_result(step, result, time.perf_counter() - started, self.config.signal)
            loss_memory = None if loss_result is None else loss_result.memory
            record = dataclasses.replace(
                record, prompt_success=success,
                loss_memory=None if loss_memory is None else float(loss_memory.value),
                loss_memory_low=None if loss_memory is None else float(loss_memory.ci_low),
                loss_memory_high=None if loss_memory is None else float(loss_memory.ci_high))
        except Exception as error:  # noqa: BLE001 - a probe must not end the training run
            seconds = time.perf_counter() - started
            record = ProbeRecord(step, None, None, None, None, None, seconds, f"{type(error).__name__}: {error}")
            self._record(record)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # give training back what the failed probe held
            if self.config.fatal:
                raise
            self._after_failure(record, error)
            return record
        seeds = (result if loss_result is None else loss_result).erased.seeds  # (n, C, h, w) with keep_seeds
        if seeds is not None:
            self._latest_seeds = seeds.detach().to("cpu", torch.float32).clone()
            self._latest_seeds_step = step
        self._record(record)
        return record

    def _run_probe(self) -> tuple[ProbeResult, ProbeResult | None, float | None]:
        """(the result on `images`, the result on `loss_images` or None, the prompt check's share or None)."""
        # Training's random streams must not depend on how often we probe: probe() draws from
        # its own generators, and fork_rng also guards the global CPU/CUDA states against
        # anything that does not.
        device = self.model.device
        cuda_devices = []
        if device.type == "cuda":
            cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()]
        images = self.images if self._loss_images is None else _joined(self.images, self._loss_images)
        with torch.random.fork_rng(devices=cuda_devices), torch.no_grad():
            if self.probe_fn is default_probe_fn:
                result = default_probe_fn(self.model, images, self.reference, self.config.probe, self.distributed)
            else:
                result = self.probe_fn(self.model, images, self.reference, self.config.probe)
            success = None if self.prompt_check is None else self.prompt_check.success(self.model)
        if self._loss_images is None:
            return result, None, success
        return (*_split(result, len(self.images), self.config.probe), success)

    @property
    def shards(self) -> bool:
        """True when the next probe is split across the ranks of an initialised process group (every
        rank must then call `maybe_probe` / `step` at the same steps; each gets the same outcome)."""
        return self.probe_fn is default_probe_fn and distributed_work.would_shard(self.distributed)

    def _record(self, record: ProbeRecord) -> None:
        """Append, update counters and decisions, then tell the logs."""
        self.history.append(record)
        self._overhead += record.seconds
        if record.ok:
            self._consecutive_failures = 0
            self._decide(record.signal_of(self.config.signal), record.prompt_success)
            logger.info("%s at step %d: memory M = %s, d_N = %s (%.1f s)", self.name, record.step,
                        _shown(record.memory, record.memory_low, record.memory_high),
                        _shown(record.d_n, record.ci_low, record.ci_high), record.seconds)
        else:
            self._failures += 1
            self._consecutive_failures += 1
        if self.config.log_fn is not None:
            entry = {**record.to_dict(), "name": self.name, "regularization_weight": self.regularization_weight,
                     "failures": self._failures, "consecutive_failures": self._consecutive_failures}
            try:
                self.config.log_fn(entry)
            except Exception as error:  # noqa: BLE001 - a logging hook must not end the run either
                if self.config.fatal:
                    raise
                _warn(f"{self.name}: log_fn failed at step {record.step}: {error!r}")

    def _after_failure(self, record: ProbeRecord, error: Exception) -> None:
        limit = self.config.max_consecutive_failures
        if limit is None or self._consecutive_failures < limit:
            _warn(f"{self.name}: probe at step {record.step} failed and was skipped: {record.error}")
            return
        steps = [r.step for r in self.history[-self._consecutive_failures:]]
        summary = f"{self._consecutive_failures} probes in a row failed (steps {steps}); the last: {record.error}"
        if self.config.on_max_failures == "raise":
            raise ProbeFailure(f"{self.name}: {summary} (max_consecutive_failures={limit})") from error
        self._disabled = True
        _warn(f"{self.name}: {summary}; monitoring stops here (max_consecutive_failures={limit}), training goes on")

    # ------------------------------------------------------------------ metrics
    def metrics(self, record: ProbeRecord) -> dict[str, float]:
        """The numbers to log for `record` (call it right after the probe), keyed "<name>/...".

        Always: "failed" (1.0 or 0.0), "failures" (total so far), "regularization_weight".
        After a successful probe also "memory", "memory_low", "memory_high", "d_n", "ci_low",
        "ci_high" (each when finite), "psnr_mean", "nll_mean", "diverged", "seconds", and, when
        measured, "prompt_success" and "loss_memory", "loss_memory_low", "loss_memory_high".
        """
        values: dict[str, float | None] = {"failed": 0.0 if record.ok else 1.0, "failures": float(self._failures),
                                           "regularization_weight": self.regularization_weight}
        if record.ok:
            values.update(memory=record.memory, memory_low=record.memory_low, memory_high=record.memory_high,
                          d_n=record.d_n, ci_low=record.ci_low, ci_high=record.ci_high,
                          psnr_mean=record.erased_psnr_mean, nll_mean=record.erased_nll_mean,
                          diverged=float(record.diverged), seconds=record.seconds,
                          prompt_success=record.prompt_success, loss_memory=record.loss_memory,
                          loss_memory_low=record.loss_memory_low, loss_memory_high=record.loss_memory_high)
        return {f"{self.name}/{key}": float(value) for key, value in values.items()
                if value is not None and math.isfinite(value)}

    # ------------------------------------------------------------------ decisions
    def _decide(self, signal: Signal, prompt_success: float | None = None) -> None:
        """Early stopping on the conservative end b: the target is reached (and, with a
        `prompt_check`, the prompt's share of the concept is at most its `max_success`), or
        `patience` probes in a row did not beat the best b by more than `min_delta`."""
        cfg = self.config
        bound = decisive_value(signal, cfg.mode)
        if self._best is None or _beats(bound, self._best, cfg.min_delta, cfg.mode):
            self._best, self._wait = bound, 0
        else:
            self._wait += 1
        if self._stop_reason is not None:
            return
        target = cfg.target
        reached = target is not None and (bound >= target if cfg.mode == "max" else bound <= target)
        if reached and (self.prompt_check is None or self.prompt_check.passes(prompt_success)):
            self._stop_reason = "target"
        elif cfg.patience is not None and self._wait >= cfg.patience:
            self._stop_reason = "patience"

    @property
    def should_stop(self) -> bool:
        """True once the target was reached or patience ran out (it stays True)."""
        return self._stop_reason is not None

    @property
    def stop_reason(self) -> StopReason | None:
        return self._stop_reason

    @property
    def latest_signal(self) -> Signal | None:
        """The deciding signal of the most recent successful probe (failures do not erase it)."""
        return next((r.signal_of(self.config.signal) for r in reversed(self.history) if r.ok), None)

    @property
    def latest_memory(self) -> float | None:
        """The memory score of the most recent successful probe."""
        return next((r.memory for r in reversed(self.history) if r.ok), None)

    @property
    def latest_d_n(self) -> float | None:
        """d_N of the most recent successful probe (failures do not erase it)."""
        return next((r.d_n for r in reversed(self.history) if r.ok), None)

    @property
    def latest_seeds(self) -> torch.Tensor | None:
        """A copy of the seeds z_T the latest successful probe found for `loss_images` (the
        concept's images, or the separate set the loss trains on), (n, C, h, w) float32 on the
        CPU in their order (NaN rows where an inversion
        diverged); None before one, or when the probe returned none (a probe config without
        `keep_seeds=True`). What a
        seed-anchored memory loss reads (`unlearn_guard.losses.SeedRecallLoss(seeds=lambda:
        monitor.latest_seeds)`). Seeds are not part of `state_dict`: after a resume they return
        with the next probe."""
        return None if self._latest_seeds is None else self._latest_seeds.clone()

    @property
    def loss_images(self) -> ImageSet:
        """The concept images a memory loss trains on, in the order of `latest_seeds`: the
        separate `loss_images` when given, else `images`."""
        return self.images if self._loss_images is None else self._loss_images

    @property
    def holds_out(self) -> bool:
        """True when the decisions read images the memory loss never sees (separate `loss_images`)."""
        return self._loss_images is not None

    @property
    def latest_seeds_step(self) -> int | None:
        """The step of the probe that found `latest_seeds`."""
        return self._latest_seeds_step

    @property
    def best_bound(self) -> float | None:
        """The best conservative interval end so far (highest low in "max", lowest high in "min")."""
        return self._best

    @property
    def probes_without_improvement(self) -> int:
        return self._wait

    @property
    def failures(self) -> int:
        """Failed probes so far."""
        return self._failures

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive_failures

    @property
    def active(self) -> bool:
        """False once `max_consecutive_failures` disabled the monitor (it probes no more)."""
        return not self._disabled

    @property
    def overhead_seconds(self) -> float:
        """Total wall time spent probing (failed probes included)."""
        return self._overhead

    @property
    def regularization_weight(self) -> float:
        """A loss weight that stays high while the concept is remembered and falls at the target.

        w = w_min + (w_max - w_min) * clip(gap / scale, 0, 1); gap = target - b ("max") or
        b - target ("min"), b the conservative end of the latest successful probe's interval;
        scale = regularization_scale or |target - 1| (see MonitorConfig). w_max before the
        first successful probe and without a target.

            loss = esd_loss + monitor.regularization_weight * memory_loss
        """
        cfg = self.config
        signal = self.latest_signal
        if signal is None or cfg.target is None:
            return cfg.regularization_max
        bound = decisive_value(signal, cfg.mode)
        gap = cfg.target - bound if cfg.mode == "max" else bound - cfg.target
        scale = cfg.regularization_scale or (abs(cfg.target - REMEMBERS) or 1.0)
        fraction = min(max(gap / scale, 0.0), 1.0)
        return cfg.regularization_min + (cfg.regularization_max - cfg.regularization_min) * fraction

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Name, history and counters, JSON-serialisable (`json.dumps` works as is)."""
        return {
            "version": _STATE_VERSION,
            "name": self.name,
            "config": self.config.to_dict(),
            "history": [record.to_dict() for record in self.history],
            "best_bound": self._best,
            "probes_without_improvement": self._wait,
            "stop_reason": self._stop_reason,
            "overhead_seconds": self._overhead,
            "failures": self._failures,
            "consecutive_failures": self._consecutive_failures,
            "disabled": self._disabled,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved, so a resumed run reaches the same decisions.

        A state saved by another monitor (another `name`) is refused. The saved config is
        informational: this monitor keeps its own, with a warning when the mode differs (the
        counters would then mean something else). Version-1 states (decisions on the point
        estimate) are read too: their counters are recomputed from the history by today's rule.
        """
        version = state.get("version")
        if version not in (1, _STATE_VERSION):
            raise InputError(f"monitor state version {version!r}; expected 1 or {_STATE_VERSION}")
        saved_name = state.get("name", self.name)
        if saved_name != self.name:
            raise InputError(f"monitor state belongs to monitor {saved_name!r}; this monitor is {self.name!r} "
                             "(restore each monitor's own state: register or list them in the same order)")
        saved_mode = state.get("config", {}).get("mode", self.config.mode)
        if saved_mode != self.config.mode:
            _warn(f"monitor state was saved with mode={saved_mode!r}; this monitor uses mode={self.config.mode!r}")
        self.history = [ProbeRecord.from_dict(r) for r in state["history"]]
        self._overhead = float(state["overhead_seconds"])
        if version == 1:
            self._replay(state["stop_reason"])
            return
        self._best = _from_json_float(state["best_bound"])
        self._wait = int(state["probes_without_improvement"])
        self._stop_reason = state["stop_reason"]
        self._failures = int(state["failures"])
        self._consecutive_failures = int(state["consecutive_failures"])
        self._disabled = bool(state["disabled"])

    def _replay(self, stop_reason: StopReason | None) -> None:
        """Counters from the history (version-1 states), keeping the stop decision they record."""
        self._best, self._wait, self._stop_reason = None, 0, None
        self._failures = self._consecutive_failures = 0
        for record in self.history:
            if record.ok:
                self._consecutive_failures = 0
                self._decide(record.signal_of(self.config.signal), record.prompt_success)
            else:
                self._failures += 1
                self._consecutive_failures += 1
        self._stop_reason = stop_reason
        self._disabled = False
