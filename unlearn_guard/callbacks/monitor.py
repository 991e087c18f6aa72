"""`ProbeMonitor`: probe the model being trained every N steps; early stopping and a loss weight.

The framework-agnostic core of the training callbacks (SPEC 5 for d_N). A training loop calls
`monitor.maybe_probe(step)` (or `monitor.step(step)`) after each optimizer step; every
`every_n_steps` steps the monitor probes the *same* modules the loop updates, records d_N, and
updates three signals:
  - `should_stop`: the concept is forgotten enough (d_N reached `target_d_n`), or d_N has not
    improved by more than `min_delta` for `patience` probes in a row;
  - `regularization_weight`: a weight for a memory-aware loss term that shrinks as d_N nears
    the target (formula in `MonitorConfig`);
  - `history`: one `ProbeRecord` per probe, failures included.

A probe never breaks training: any `Exception` (out of memory, `NonFiniteError`, a bad device)
is recorded in the history with its message and reported with `warnings.warn` (category
`ProbeWarning`), unless `fatal=True`. `KeyboardInterrupt` always propagates. Probing leaves
weights, `requires_grad` flags, train/eval modes and the global random streams as it found them.

    monitor = ProbeMonitor(model, concept_images, "a parachute",
                           reference=reference_images, reference_prompts="a photo",
                           config=MonitorConfig(every_n_steps=100, target_d_n=2.0, patience=5))
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
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch

from ..config import ProbeConfig
from ..errors import InputError, InsufficientDataError, NonFiniteError
from ..io import ImageSet, ImagesInput, PromptsInput, load_image_set
from ..models.bundle import DiffusionModel
from ..probe import as_model, probe, resolve_config
from ..results import ProbeResult

logger = logging.getLogger("unlearn_guard.callbacks")

Mode = Literal["max", "min"]
StopReason = Literal["target", "patience"]
ProbeFn = Callable[[DiffusionModel, ImageSet, ImageSet, ProbeConfig], ProbeResult]
LogFn = Callable[[dict[str, Any]], None]

# d_N = 1 means the concept's seeds are as likely as anything the model knows (SPEC 5): the
# default regularisation scale is the distance from there to the target.
REMEMBERS_D_N = 1.0
_STATE_VERSION = 1


class ProbeWarning(UserWarning):
    """A probe failed during training; the monitor recorded it and training went on."""


def _require(condition: bool, name: str, value: Any, expected: str) -> None:
    if not condition:
        raise InputError(f"MonitorConfig field {name!r}: got {value!r}, expected {expected}")


def _to_json_float(value: float | None) -> float | str | None:
    """JSON has no nan/inf: write them as strings that float() reads back."""
    if value is None or math.isfinite(value):
        return value
    return str(value)


def _from_json_float(value: float | str | None) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class MonitorConfig:
    """When to probe, with what, and when to stop.

    Args:
        every_n_steps: probe when `step % every_n_steps == 0` (step 0 included, once per step).
        probe: a `ProbeConfig` or a preset name; a name gets `progress=False` (no bars in logs).
        target_d_n: stop once d_N reaches it (>= in mode "max", <= in mode "min"); None: never.
        patience: stop after this many probes in a row without improvement; None: never.
        min_delta: an improvement must beat the best d_N so far by more than this.
        mode: "max" (erasure: d_N should grow) or "min" (d_N should shrink).
        regularization_max / regularization_min / regularization_scale: the weight schedule,
            w = w_min + (w_max - w_min) * clip(gap / scale, 0, 1), with gap = target - d_N in
            mode "max" (d_N - target in "min") for the latest successful probe, and scale
            defaulting to |target - 1| (1 when that is 0): d_N = 1 (still remembers) gives
            w_max, the target gives w_min. Before the first successful probe, or without a
            target, w = w_max.
        fatal: re-raise probe failures instead of recording them and going on.
        log_fn: called with each record's dict (e.g. `wandb.log`); not serialised.
    """

    every_n_steps: int = 100
    probe: ProbeConfig | str = "fast"
    target_d_n: float | None = None
    patience: int | None = None
    min_delta: float = 0.0
    mode: Mode = "max"
    regularization_max: float = 1.0
    regularization_min: float = 0.0
    regularization_scale: float | None = None
    fatal: bool = False
    log_fn: LogFn | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        _require(isinstance(self.every_n_steps, int) and self.every_n_steps >= 1,
                 "every_n_steps", self.every_n_steps, "an int >= 1")
        if isinstance(self.probe, str):
            object.__setattr__(self, "probe", resolve_config(self.probe, {"progress": False}))
        _require(isinstance(self.probe, ProbeConfig), "probe", self.probe, "a ProbeConfig or a preset name")
        _require(self.mode in ("max", "min"), "mode", self.mode, "'max' or 'min'")
        _require(self.target_d_n is None or math.isfinite(self.target_d_n),
                 "target_d_n", self.target_d_n, "None or a finite number")
        _require(self.patience is None or (isinstance(self.patience, int) and self.patience >= 1),
                 "patience", self.patience, "None or an int >= 1")
        _require(self.min_delta >= 0, "min_delta", self.min_delta, "a number >= 0")
        _require(0 <= self.regularization_min <= self.regularization_max, "regularization_min",
                 (self.regularization_min, self.regularization_max), "0 <= regularization_min <= regularization_max")
        _require(self.regularization_scale is None or self.regularization_scale > 0,
                 "regularization_scale", self.regularization_scale, "None or a number > 0")
        _require(self.log_fn is None or callable(self.log_fn), "log_fn", self.log_fn, "None or a callable")

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
    `seconds` is the wall time spent, failures included.
    """

    step: int
    d_n: float | None
    ci_low: float | None
    ci_high: float | None
    erased_nll_mean: float | None
    erased_psnr_mean: float | None
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def from_result(cls, step: int, result: ProbeResult, seconds: float) -> "ProbeRecord":
        md = result.memory_distance
        if md is None:
            raise InputError("the probe returned no d_N; the monitor needs a reference set")
        if not math.isfinite(md.value):
            raise NonFiniteError(
                f"d_N = {md.value} at step {step} (D(E,N) = {md.distance_erased_normal}, "
                f"D(R,N) = {md.distance_reference_normal}); expected a finite number"
            )
        summary = result.erased.summary()
        return cls(step, float(md.value), float(md.ci_low), float(md.ci_high), float(summary["nll_mean"]),
                   float(summary["psnr_mean"]), seconds)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {key: _to_json_float(value) if isinstance(value, float) else value for key, value in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ProbeRecord":
        numbers = ("d_n", "ci_low", "ci_high", "erased_nll_mean", "erased_psnr_mean")
        return cls(
            step=int(data["step"]),
            **{name: _from_json_float(data.get(name)) for name in numbers},
            seconds=float(data["seconds"]),
            error=data.get("error"),
        )


def default_probe_fn(model: DiffusionModel, images: ImageSet, reference: ImageSet, config: ProbeConfig) -> ProbeResult:
    """What the monitor runs by default: `probe(model, E, reference=R, config=config)`."""
    return probe(model, images, reference=reference, config=config)


class ProbeMonitor:
    """Probes a model every N training steps; records d_N, decides when to stop, weights a loss.

    Args:
        model: the `DiffusionModel` being trained (or a diffusers pipeline); it must hold the very
            UNet the loop updates (a peft/compile/DDP wrapper is fine), so probes see current weights.
        images / prompts: the erased concept's images E and their prompts (any form `probe` takes).
        reference / reference_prompts: the reference set R (other content); needed for d_N.
        config: a `MonitorConfig` (default: every 100 steps, preset "fast", no early stop).
        probe_fn: replaces the measurement (tests, custom probes); same arguments as
            `default_probe_fn`.

    Images are validated and resized once here (to the model's resolution); both sets need at
    least 2 images.

        monitor = ProbeMonitor(model, concept, "a parachute", reference=ref, reference_prompts="a photo",
                               config=MonitorConfig(every_n_steps=50, target_d_n=2.0))
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
    ) -> None:
        self.config = config if config is not None else MonitorConfig()
        if not isinstance(self.config, MonitorConfig):
            raise InputError(f"config: got {type(self.config).__name__}, expected a MonitorConfig")
        self.model = as_model(model)
        self.model.check()
        probe_config = self.config.probe
        self.images = load_image_set(images, prompts, resolution=self.model.resolution,
                                     resize=probe_config.resize, label="images")
        self.reference = load_image_set(reference, reference_prompts, resolution=self.model.resolution,
                                        resize=probe_config.resize, label="reference")
        for label, part in (("images (E)", self.images), ("reference (R)", self.reference)):
            if len(part) < 2:
                raise InsufficientDataError(f"d_N needs at least 2 images in each set; {label} has {len(part)}")
        self.probe_fn: ProbeFn = probe_fn or default_probe_fn
        self.history: list[ProbeRecord] = []
        self._best: float | None = None
        self._wait = 0
        self._stop_reason: StopReason | None = None
        self._overhead = 0.0

    # ------------------------------------------------------------------ probing
    def maybe_probe(self, step: int) -> ProbeRecord | None:
        """Probe when `step % every_n_steps == 0` and this step has not been probed yet."""
        if step % self.config.every_n_steps != 0:
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

        Failures are recorded (d_N None, `error` set) and warned about, or re-raised with
        `fatal=True`; `KeyboardInterrupt` always propagates.
        """
        started = time.perf_counter()
        try:
            result = self._run_probe()
            record = ProbeRecord.from_result(step, result, time.perf_counter() - started)
        except Exception as error:  # noqa: BLE001 - a probe must not end the training run
            seconds = time.perf_counter() - started
            record = ProbeRecord(step, None, None, None, None, None, seconds, f"{type(error).__name__}: {error}")
            self._record(record)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # give training back what the failed probe held
            if self.config.fatal:
                raise
            warnings.warn(f"probe at step {step} failed and was skipped: {record.error}", ProbeWarning, stacklevel=2)
            return record
        self._record(record)
        self._update_stop(record.d_n)
        return record

    def _run_probe(self) -> ProbeResult:
        # Training's random streams must not depend on how often we probe: probe() draws from
        # its own generators, and fork_rng also guards the global CPU/CUDA states against
        # anything that does not.
        device = self.model.device
        cuda_devices = []
        if device.type == "cuda":
            cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()]
        with torch.random.fork_rng(devices=cuda_devices), torch.no_grad():
            return self.probe_fn(self.model, self.images, self.reference, self.config.probe)

    def _record(self, record: ProbeRecord) -> None:
        self.history.append(record)
        self._overhead += record.seconds
        if record.ok:
            logger.info("probe at step %d: d_N = %.4f [%.4f, %.4f] (%.1f s)",
                        record.step, record.d_n, record.ci_low, record.ci_high, record.seconds)
        if self.config.log_fn is not None:
            try:
                self.config.log_fn({**record.to_dict(), "regularization_weight": self.regularization_weight})
            except Exception as error:  # noqa: BLE001 - a logging hook must not end the run either
                if self.config.fatal:
                    raise
                warnings.warn(f"log_fn failed at step {record.step}: {error!r}", ProbeWarning, stacklevel=3)

    # ------------------------------------------------------------------ decisions
    def _better(self, value: float, than: float, margin: float) -> bool:
        return value > than + margin if self.config.mode == "max" else value < than - margin

    def _update_stop(self, d_n: float) -> None:
        """Early stopping: the target is reached, or `patience` probes without improvement."""
        cfg = self.config
        if self._best is None or self._better(d_n, self._best, cfg.min_delta):
            self._best, self._wait = d_n, 0
        else:
            self._wait += 1
        if self._stop_reason is not None:
            return
        target = cfg.target_d_n
        if target is not None and (d_n >= target if cfg.mode == "max" else d_n <= target):
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
    def latest_d_n(self) -> float | None:
        """d_N of the most recent successful probe (failures do not erase it)."""
        return next((r.d_n for r in reversed(self.history) if r.ok), None)

    @property
    def best_d_n(self) -> float | None:
        return self._best

    @property
    def probes_without_improvement(self) -> int:
        return self._wait

    @property
    def overhead_seconds(self) -> float:
        """Total wall time spent probing (failed probes included)."""
        return self._overhead

    @property
    def regularization_weight(self) -> float:
        """A loss weight that stays high while the concept is remembered and falls at the target.

        w = w_min + (w_max - w_min) * clip(gap / scale, 0, 1); gap = target - d_N ("max") or
        d_N - target ("min"); scale = regularization_scale or |target - 1| (see MonitorConfig).
        w_max before the first successful probe and without a target.

            loss = esd_loss + monitor.regularization_weight * memory_loss
        """
        cfg = self.config
        d_n = self.latest_d_n
        if d_n is None or cfg.target_d_n is None:
            return cfg.regularization_max
        gap = cfg.target_d_n - d_n if cfg.mode == "max" else d_n - cfg.target_d_n
        scale = cfg.regularization_scale or (abs(cfg.target_d_n - REMEMBERS_D_N) or 1.0)
        fraction = min(max(gap / scale, 0.0), 1.0)
        return cfg.regularization_min + (cfg.regularization_max - cfg.regularization_min) * fraction

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """History and early-stop counters, JSON-serialisable (`json.dumps` works as is)."""
        return {
            "version": _STATE_VERSION,
            "config": self.config.to_dict(),
            "history": [record.to_dict() for record in self.history],
            "best_d_n": self._best,
            "probes_without_improvement": self._wait,
            "stop_reason": self._stop_reason,
            "overhead_seconds": self._overhead,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved, so a resumed run reaches the same decisions.

        The saved config is informational: this monitor keeps its own, with a warning when the
        mode differs (the counters would then mean something else).
        """
        if state.get("version") != _STATE_VERSION:
            raise InputError(f"monitor state version {state.get('version')!r}; expected {_STATE_VERSION}")
        saved_mode = state.get("config", {}).get("mode", self.config.mode)
        if saved_mode != self.config.mode:
            warnings.warn(f"monitor state was saved with mode={saved_mode!r}; this monitor uses "
                          f"mode={self.config.mode!r}", ProbeWarning, stacklevel=2)
        self.history = [ProbeRecord.from_dict(r) for r in state["history"]]
        self._best = _from_json_float(state["best_d_n"])
        self._wait = int(state["probes_without_improvement"])
        self._stop_reason = state["stop_reason"]
        self._overhead = float(state["overhead_seconds"])
