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
the goal (`unlearn_guard.callbacks.decision` states the rules). A point estimate that moves
inside an unchanged interval therefore changes no decision. How many images that takes is
measured by `benchmarks/decision_interval.py` (rows in benchmarks/RESULTS.md, table in the
README): with 4+4 images the interval does not cover the choice of images; use at least 8+8 and
a `min_delta` near the interval's half width.
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
import re
import time
from typing import Any, Callable

import torch

from .. import distributed as distributed_work
from ..attacks.results import WorstCaseSuccess
from ..config import ProbeConfig
from ..errors import InputError
from ..io import ImageSet, ImagesInput, PromptsInput
from ..kernels.dispatch import resolve_backend
from ..models.bundle import DiffusionModel
from ..probe import ProbeFailure, as_model, probe
from ..results import ProbeResult
from . import decision
from .decision import REMEMBERS, SIGNAL_LABELS, SIGNALS, Mode, Signal, SignalName, StopReason, StopState, decisive_value
from .image_sets import joined, load_monitor_images, split_result
from .monitor_config import FailureAction, LogFn, MonitorConfig
from .prompt_check import PromptCheck
from .records import STATE_VERSION, ProbeRecord, check_saved_state, optional_float
from .warnings import ProbeWarning, warn_probe

__all__ = ["DEFAULT_NAME", "REMEMBERS", "SIGNALS", "SIGNAL_LABELS", "FailureAction", "LogFn", "Mode", "MonitorConfig",
           "ProbeFn", "ProbeMonitor", "ProbeRecord", "ProbeWarning", "Signal", "SignalName", "StopReason",
           "decisive_value", "default_probe_fn"]

logger = logging.getLogger("unlearn_guard.callbacks")

ProbeFn = Callable[[DiffusionModel, ImageSet, ImageSet, ProbeConfig], ProbeResult]
DEFAULT_NAME = "probe"
# A monitor's name prefixes metric keys ("<name>/d_n") that every logger must accept.
_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*")


def default_probe_fn(model: DiffusionModel, images: ImageSet, reference: ImageSet, config: ProbeConfig,
                     distributed: bool | None = False) -> ProbeResult:
    """What the monitor runs by default: `probe(model, E, reference=R, config=config, distributed=...)`."""
    return probe(model, images, reference=reference, config=config, distributed=distributed)


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
        sets = load_monitor_images(images, prompts, reference, reference_prompts, loss_images, loss_prompts,
                                   resolution=self.model.resolution, resize=probe_config.resize)
        self.images, self.reference = sets.images, sets.reference
        self._loss_images: ImageSet | None = sets.loss_images
        if prompt_check is not None and not isinstance(prompt_check, PromptCheck):
            raise InputError(f"prompt_check: got {type(prompt_check).__name__}; expected a PromptCheck or None")
        self.prompt_check = prompt_check
        deciding = self.config.target is not None or self.config.patience is not None
        if deciding and probe_config.bootstrap_samples == 0:
            warn_probe(f"monitor {name!r}: the probe config has bootstrap_samples=0, so there is no interval and "
                       f"early stopping decides on the point estimate of the {SIGNAL_LABELS[self.config.signal]}")
        self.probe_fn: ProbeFn = probe_fn or default_probe_fn
        if distributed is not None and not isinstance(distributed, bool):
            raise InputError(f"distributed: got {distributed!r}; expected True, False or None (detect a process group)")
        self.distributed = distributed
        self.history: list[ProbeRecord] = []
        self._stopping = StopState()
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
            result, loss_result, checked = self._run_probe()
            record = ProbeRecord.from_result(step, result, time.perf_counter() - started, self.config.signal,
                                             prompt_success=None if checked is None else checked.rate,
                                             prompt_setting=None if checked is None else checked.worst_setting.label,
                                             loss_result=loss_result)
        except Exception as error:  # noqa: BLE001 - a probe must not end the training run
            record = ProbeRecord.failed(step, time.perf_counter() - started, error)
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

    def _run_probe(self) -> tuple[ProbeResult, ProbeResult | None, WorstCaseSuccess | None]:
        """(the result on `images`, the result on `loss_images` or None, the prompt check's measure or None)."""
        # Training's random streams must not depend on how often we probe: probe() draws from
        # its own generators, and fork_rng also guards the global CPU/CUDA states against
        # anything that does not.
        device = self.model.device
        cuda_devices = []
        if device.type == "cuda":
            cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()]
        images = self.images if self._loss_images is None else joined(self.images, self._loss_images)
        with torch.random.fork_rng(devices=cuda_devices), torch.no_grad():
            if self.probe_fn is default_probe_fn:
                result = default_probe_fn(self.model, images, self.reference, self.config.probe, self.distributed)
            else:
                result = self.probe_fn(self.model, images, self.reference, self.config.probe)
            checked = None if self.prompt_check is None else self.prompt_check.measure(self.model)
        if self._loss_images is None:
            return result, None, checked
        return (*split_result(result, len(self.images), self.config.probe), checked)

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
            logger.info("%s at step %d: %s (%.1f s)", self.name, record.step, record.describe(), record.seconds)
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
                warn_probe(f"{self.name}: log_fn failed at step {record.step}: {error!r}")

    def _after_failure(self, record: ProbeRecord, error: Exception) -> None:
        limit = self.config.max_consecutive_failures
        if limit is None or self._consecutive_failures < limit:
            warn_probe(f"{self.name}: probe at step {record.step} failed and was skipped: {record.error}")
            return
        steps = [r.step for r in self.history[-self._consecutive_failures:]]
        summary = f"{self._consecutive_failures} probes in a row failed (steps {steps}); the last: {record.error}"
        if self.config.on_max_failures == "raise":
            raise ProbeFailure(f"{self.name}: {summary} (max_consecutive_failures={limit})") from error
        self._disabled = True
        warn_probe(f"{self.name}: {summary}; monitoring stops here (max_consecutive_failures={limit}), training goes on")

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
        self._stopping = decision.next_stop_state(
            self._stopping, signal, mode=cfg.mode, min_delta=cfg.min_delta, target=cfg.target, patience=cfg.patience,
            target_counts=self.prompt_check is None or self.prompt_check.passes(prompt_success))

    @property
    def should_stop(self) -> bool:
        """True once the target was reached or patience ran out (it stays True)."""
        return self._stopping.reason is not None

    @property
    def stop_reason(self) -> StopReason | None:
        return self._stopping.reason

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
        return self._stopping.best

    @property
    def probes_without_improvement(self) -> int:
        return self._stopping.wait

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
        return decision.regularization_weight(self.latest_signal, mode=cfg.mode, target=cfg.target,
                                              weight_min=cfg.regularization_min, weight_max=cfg.regularization_max,
                                              scale=cfg.regularization_scale)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Name, history and counters, JSON-serialisable (`json.dumps` works as is)."""
        return {
            "version": STATE_VERSION,
            "name": self.name,
            "config": self.config.to_dict(),
            "history": [record.to_dict() for record in self.history],
            "best_bound": self._stopping.best,
            "probes_without_improvement": self._stopping.wait,
            "stop_reason": self._stopping.reason,
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
        version = check_saved_state(state, self.name, self.config.mode)
        self.history = [ProbeRecord.from_dict(r) for r in state["history"]]
        self._overhead = float(state["overhead_seconds"])
        if version == 1:
            self._replay(state["stop_reason"])
            return
        self._stopping = StopState(optional_float(state["best_bound"]), int(state["probes_without_improvement"]),
                                   state["stop_reason"])
        self._failures = int(state["failures"])
        self._consecutive_failures = int(state["consecutive_failures"])
        self._disabled = bool(state["disabled"])

    def _replay(self, stop_reason: StopReason | None) -> None:
        """Counters from the history (version-1 states), keeping the stop decision they record."""
        self._stopping = StopState()
        self._failures = self._consecutive_failures = 0
        for record in self.history:
            if record.ok:
                self._consecutive_failures = 0
                self._decide(record.signal_of(self.config.signal), record.prompt_success)
            else:
                self._failures += 1
                self._consecutive_failures += 1
        self._stopping = dataclasses.replace(self._stopping, reason=stop_reason)
        self._disabled = False
