"""The main job on the embedded default: erase a concept from the shipped small model, watch its memory.

No flags, no downloads:
  1. load the project's own shapes-world model and its concept classifier;
  2. measure the target: the memory score of the world *retrained without the concept* (shipped
     for circle, square and triangle; the ground truth of unlearning), with the monitor's preset
     and decision images;
  3. erase the concept ("a circle" by default) with ESD-LoRA plus the memory loss, while a
     `ProbeMonitor` probes the model being trained every N steps. Three image sets keep the
     readings honest: the memory loss trains on its own images (`loss_images`, seed 10_000), the
     monitor decides on images the loss never sees (seed 40_000), and the gate reads a third set
     (seed 70_000). Training stops once the memory score's interval on the decision images is at
     or below the target *and* "a <concept>" draws the concept in at most 10% of 16 generations
     (`PromptCheck`: measured, the loss alone can lower the score while the prompt still draws
     the concept);
  4. at every probe, print a row: step, classifier accuracy of images generated from the
     concept's prompt, the memory score M and d_N with their intervals, mean reconstruction
     PSNR, M on the loss's own images and the loss weight;
  5. gate the final adapter with the `mofc` preset and the release gate's rule (the memory
     score's upper end at most the calibrated threshold, `unlearn_guard.gate.decision`) on the
     third, held-out set;
  6. write result.json, report.md, the final LoRA adapter, the adapter at every probe step
     (`checkpoints/checkpoint-<step>/`) and the held-out image folders (`images/concept`,
     `images/reference`, with prompts.csv), so `unlearn-guard gate` can gate the run, and say
     where they went.
An ESD step that takes `slow_step_factor` times the median step so far gets a one-line hint,
once: on a 2-core machine shared with another torch job, steps went from about 0.5 s to 8-11 s
because both jobs' OpenMP threads spin against each other, and fewer threads help.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .attacks import ShapeJudge
from .callbacks import MonitorConfig, ProbeMonitor, PromptCheck
from .config import ProbeConfig
from .gate.decision import Thresholds, decide
from .gate.finish import control_record
from .gate.folders import save_image_folder
from .losses import AnchorPathConfig
from .probe import probe
from .provenance import model_provenance, provenance
from .results import interval_record
from .files import write_text_atomic
from .trainers import ESDConfig, esd_lora_erase, save_esd_adapter
from .signal import DEFAULT_MAX_MEMORY
from .world import SHAPES, WEIGHTS_DIR, concept_prompt, load_classifier, load_world_model
from .world.evaluate import accuracy_from_prompt, probe_sets


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the main job; the defaults finish in a few minutes on 2 CPU cores."""

    concept: str = "circle"
    method: str = "esd-x"
    iterations: int = 300  # the budget; early stop cut it at 250 in the README run
    lr: float = 3e-3
    probe_every: int = 50
    images_per_set: int = 8
    accuracy_images: int = 16
    monitor_preset: str = "track"
    memory_loss: str = "anchor_path"  # "none": ESD alone
    memory_loss_weight: float = 10.0  # the monitor's weight while the concept is fully remembered
    # the monitor's weight at the target (MonitorConfig.regularization_min). Measured in the demo:
    # with 0, the weight fell to 0 at step 150 and 50 steps later M was back at 0.87 and the
    # prompt's accuracy at 0.44; with 5 the score stayed down and early stop fired at 250
    memory_loss_min_weight: float = 5.0
    # keep 3 / guidance 0.5: the last setting the circle pool ablation chose (benchmarks/RESULTS.md)
    memory_keep_weight: float = 3.0  # AnchorPathConfig.keep_weight
    memory_guidance: float = 0.5  # AnchorPathConfig.guidance
    max_prompt_accuracy: float = 0.1  # early stop also needs "a <concept>" accuracy at most this
    gate_preset: str = "mofc"
    gate_max_memory: float = DEFAULT_MAX_MEMORY
    seed: int = 0
    slow_step_factor: float = 5.0  # hint once when an ESD step takes this many times the median (0: never)

    def __post_init__(self) -> None:
        from .errors import InputError

        if self.concept not in SHAPES:
            raise InputError(f"concept: got {self.concept!r}; expected one of {SHAPES}")
        if not 0 < self.gate_max_memory <= 1:
            raise InputError(f"gate_max_memory: got {self.gate_max_memory!r}; expected a number in (0, 1]")
        if self.memory_loss not in ("anchor_path", "none"):
            raise InputError(f"memory_loss: got {self.memory_loss!r}; expected 'anchor_path' or 'none' (ESD alone)")
        if not (isinstance(self.memory_loss_weight, (int, float)) and 0 < self.memory_loss_weight < math.inf):
            raise InputError(f"memory_loss_weight: got {self.memory_loss_weight!r}; expected a finite number > 0 "
                             "(memory_loss='none' for ESD alone)")
        if not (isinstance(self.memory_loss_min_weight, (int, float))
                and 0 <= self.memory_loss_min_weight <= self.memory_loss_weight):
            raise InputError(f"memory_loss_min_weight: got {self.memory_loss_min_weight!r}; expected a number in "
                             f"[0, memory_loss_weight={self.memory_loss_weight!r}]")
        for name in ("memory_keep_weight", "memory_guidance"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < math.inf):
                raise InputError(f"{name}: got {value!r}; expected a finite number >= 0")
        if not (isinstance(self.max_prompt_accuracy, (int, float)) and 0 <= self.max_prompt_accuracy <= 1):
            raise InputError(f"max_prompt_accuracy: got {self.max_prompt_accuracy!r}; expected a number in [0, 1]")
        if not self.slow_step_factor >= 0:
            raise InputError(f"slow_step_factor: got {self.slow_step_factor!r}; expected a number >= 0 (0: no hint)")


class SlowStepHint:
    """One line, once, when a training step takes `factor` times the median of the steps before it.

    The median needs `min_history` steps first, so warm-up steps never trigger it.
    """

    def __init__(self, factor: float = 5.0, min_history: int = 3) -> None:
        self.factor = factor
        self.min_history = min_history
        self.durations: list[float] = []
        self.given = False

    def observe(self, step: int, seconds: float) -> str | None:
        """Record one step's duration; the hint when this step is the first slow one, else None."""
        hint = None
        if self.factor > 0 and not self.given and len(self.durations) >= self.min_history:
            median = statistics.median(self.durations)
            if median > 0 and seconds >= self.factor * median:
                import torch

                self.given = True
                hint = (f"hint: ESD step {step} took {seconds:.1f} s, {seconds / median:.0f}x the median step "
                        f"({median:.2f} s) with {torch.get_num_threads()} torch threads; if another job shares "
                        "the CPU, fewer threads help: unlearn-guard demo --threads 1 (torch.set_num_threads(1) in Python)")
        self.durations.append(seconds)
        return hint


def _interval(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" + ("" if low is None or math.isnan(low) else f" [{low:.3f}, {high:.3f}]")


def _report_markdown(rows: list[dict[str, Any]], gate: dict[str, Any], target: dict[str, Any], config: DemoConfig,
                     out: Path, stopped_at: int | None) -> str:
    lines = [
        f"# Erasing '{config.concept}' from the shapes world ({config.method}"
        f"{'' if config.memory_loss == 'none' else ' + ' + config.memory_loss}, {config.iterations} iterations)",
        "",
        f"Probe every {config.probe_every} steps with preset `{config.monitor_preset}`; "
        f"{config.images_per_set} concept and {config.images_per_set} reference images, which the memory loss "
        f"never trains on (it has {config.images_per_set} images of its own). "
        f"Target: {target['description']}; and \"a {config.concept}\" accuracy at most {config.max_prompt_accuracy:g}.",
        "",
        "| step | concept accuracy | memory M [95% interval] | d_N [95% interval] | mean PSNR (dB) | M on the loss's images | memory loss weight |",
        "|---:|---:|---|---|---:|---:|---:|",
    ]
    for row in rows:
        if row["error"]:
            lines.append(f"| {row['step']} | {row['concept_accuracy']:.2f} | probe failed: {row['error']} | | | | |")
            continue
        lines.append(f"| {row['step']} | {row['concept_accuracy']:.2f} | "
                     f"{_interval(row['memory'], row['memory_low'], row['memory_high'])} | "
                     f"{_interval(row['d_n'], row['ci_low'], row['ci_high'])} | {row['psnr_mean']:.2f} | "
                     f"{'-' if row['loss_memory'] is None else format(row['loss_memory'], '.3f')} | "
                     f"{'-' if row['memory_loss_weight'] is None else format(row['memory_loss_weight'], '.2f')} |")
    if stopped_at is not None:
        lines += ["", f"Early stop at step {stopped_at}: the memory score's upper end on the decision images reached "
                      f"the target and the prompt's accuracy was at most {config.max_prompt_accuracy:g}."]
    verdict = {"pass": "PASS (forgotten like a model that never saw it)", "fail": "FAIL (still remembers)",
               "inconclusive": "INCONCLUSIVE (the probe cannot read memory in this model)"}[
        gate.get("verdict", "pass" if gate["passed"] else "fail")]
    lines += [
        "",
        f"## Gate: {verdict}",
        "",
        f"Final adapter probed with `{config.gate_preset}`: memory M = "
        f"{_interval(gate['memory'], gate['memory_low'], gate['memory_high'])} (pass when the upper end <= "
        f"{config.gate_max_memory:g}); d_N = {_interval(gate['d_n'], gate['ci_low'], gate['ci_high'])}; mean PSNR "
        f"{gate['psnr_mean']:.2f} dB. M is the share of the concept's images for which the model still holds a seed "
        "that regenerates the image and is as likely as the seeds of content it knows.",
        "",
        f"Adapter: `{out / 'adapter'}`",
    ]
    return "\n".join(lines) + "\n"


def measure_target(config: DemoConfig, probe_config: ProbeConfig, images: tuple) -> dict[str, Any]:
    """The memory score of the world retrained without the concept, on the monitor's images and preset:
    what "forgotten like a model that never saw it" reads as here. Without shipped retrained
    weights for the concept, the gate's calibrated threshold stands in."""
    folder = WEIGHTS_DIR / f"without-{config.concept}"
    if not (folder / "pipeline" / "model_index.json").is_file():
        return {"memory": None, "target": config.gate_max_memory, "source": "calibrated gate threshold",
                "description": f"M <= {config.gate_max_memory:g}, the gate's calibrated threshold (no retrained world "
                               f"for '{config.concept}' is shipped)"}
    erased, erased_prompts, reference, reference_prompts = images
    result = probe(load_world_model(folder), erased, erased_prompts, reference=reference,
                   reference_prompts=reference_prompts, config=probe_config)
    memory = result.memory
    source = f"the world retrained without '{config.concept}' ({folder})"
    if memory is None or not memory.ci_high < 1.0:  # nothing to stop on: no reading tells it from "remembers"
        shown = "undefined" if memory is None else _interval(memory.value, memory.ci_low, memory.ci_high)
        return {"memory": None if memory is None else memory.value,
                "memory_low": None if memory is None else memory.ci_low,
                "memory_high": None if memory is None else memory.ci_high, "target": None, "source": source,
                "description": f"none: the world retrained without '{config.concept}' reads M = {shown} on these "
                               f"{len(erased)} + {len(reference)} images, an interval that reaches 1 (too few images "
                               "to tell it from a model that remembers); no early stop"}
    return {"memory": memory.value, "memory_low": memory.ci_low, "memory_high": memory.ci_high,
            "target": memory.ci_high, "source": source,
            "description": f"M's upper end <= {memory.ci_high:.3f}, the upper end of the world retrained without "
                           f"'{config.concept}' (M = {_interval(memory.value, memory.ci_low, memory.ci_high)}): "
                           "forgotten like a model that never saw it"}


class _ProbeRows:
    """One row per probe of the monitor: kept for result.json and report.md, printed as it comes."""

    def __init__(self, model: Any, classifier: Any, monitor: ProbeMonitor, config: DemoConfig, memory_aware: bool,
                 echo: Callable[[str], Any]) -> None:
        self.model, self.classifier, self.monitor = model, classifier, monitor
        self.config, self.memory_aware, self.echo = config, memory_aware, echo
        self.rows: list[dict[str, Any]] = []

    def accuracy(self) -> float:
        config = self.config
        return accuracy_from_prompt(self.model, self.classifier, config.concept, config.accuracy_images,
                                    20_000 + config.seed)

    def record(self, step: int) -> None:
        """Add and print the row of the monitor's latest probe, taken at `step`."""
        entry = self.monitor.history[-1]
        measured = entry.prompt_success if entry.prompt_success is not None else self.accuracy()
        row = {"step": step, "concept_accuracy": measured, "memory": entry.memory, "memory_low": entry.memory_low,
               "memory_high": entry.memory_high, "d_n": entry.d_n, "ci_low": entry.ci_low, "ci_high": entry.ci_high,
               "psnr_mean": entry.erased_psnr_mean, "nll_mean": entry.erased_nll_mean, "error": entry.error,
               "memory_loss_weight": self.monitor.regularization_weight if self.memory_aware else None,
               "loss_memory": entry.loss_memory, "loss_memory_low": entry.loss_memory_low,
               "loss_memory_high": entry.loss_memory_high}
        self.rows.append(row)
        if entry.error:
            self.echo(f"{step:>6}  probe failed: {entry.error}")
        else:
            weight = "-" if row["memory_loss_weight"] is None else f"{row['memory_loss_weight']:.2f}"
            loss_m = "-" if row["loss_memory"] is None else f"{row['loss_memory']:.3f}"
            self.echo(f"{step:>6}  {row['concept_accuracy']:>8.2f}  {_interval(row['memory'], row['memory_low'], row['memory_high']):<23}  "
                      f"{_interval(row['d_n'], row['ci_low'], row['ci_high']):<23}  {row['psnr_mean']:>8.2f}  {loss_m:>7}  "
                      f"{weight:>11}")


def _build_monitor(model: Any, classifier: Any, config: DemoConfig, watched: Any, loss_set: Any,
                   monitor_probe: ProbeConfig, target: dict[str, Any],
                   memory_aware: bool) -> tuple[ProbeMonitor, PromptCheck]:
    """The monitor on the decision images (and the loss's own images), with the prompt's accuracy check."""
    # the prompt's accuracy is measured by the monitor, so early stop can require it too
    prompt_check = PromptCheck(concept_prompt(config.concept), ShapeJudge(config.concept, classifier),
                               max_success=config.max_prompt_accuracy, n=config.accuracy_images,
                               seed=20_000 + config.seed)
    monitor = ProbeMonitor(
        model, watched.concept, watched.concept_prompts, reference=watched.reference,
        reference_prompts=watched.reference_prompts,
        loss_images=loss_set.concept if memory_aware else None,
        loss_prompts=loss_set.concept_prompts if memory_aware else None,
        config=MonitorConfig(every_n_steps=config.probe_every, target=target["target"],
                             probe=dataclasses.replace(monitor_probe, keep_seeds=memory_aware),
                             regularization_max=config.memory_loss_weight,
                             regularization_min=config.memory_loss_min_weight),
        prompt_check=prompt_check,
    )
    return monitor, prompt_check


def _echo_plan(echo: Callable[[str], Any], config: DemoConfig, target: dict[str, Any], loss_images: int,
               memory_aware: bool) -> None:
    """What the run does and what it stops on, then the table's header."""
    prompt = concept_prompt(config.concept)
    loss_text = (f" + memory loss {config.memory_loss} (weight up to {config.memory_loss_weight:g}, from the monitor)"
                 if memory_aware else " alone")
    echo(f"erasing '{prompt}' from the shapes world with {config.method} LoRA{loss_text}, {config.iterations} "
         f"iterations; probing every {config.probe_every} steps ({config.monitor_preset})")
    echo(f"target: {target['description']}; and \"{prompt}\" draws the concept in at most "
         f"{config.max_prompt_accuracy:g} of {config.accuracy_images} generations")
    if memory_aware:
        echo(f"the memory loss trains on {loss_images} other images of the concept (their M: column "
             "'loss M'); the monitor decides on images the loss never sees")
    echo(f"{'step':>6}  {'accuracy':>8}  {'memory M [interval]':<23}  {'d_N [interval]':<23}  {'PSNR dB':>8}  "
         f"{'loss M':>7}  {'loss weight':>11}")


def _esd_config(config: DemoConfig, monitor_probe: ProbeConfig, memory_aware: bool) -> ESDConfig:
    """ESD on the concept's prompt, with the anchor-path memory loss weighted by the monitor when memory-aware."""
    memory: dict[str, Any] = {}
    if memory_aware:  # the loss follows the seeds each probe finds; its weight falls as M nears the target
        memory = dict(memory_loss=AnchorPathConfig(steps=monitor_probe.inversion.num_steps, seed=config.seed,
                                                   keep_weight=config.memory_keep_weight,
                                                   guidance=config.memory_guidance),
                      memory_loss_weight="monitor")
    return ESDConfig(concept=concept_prompt(config.concept), method=config.method, iterations=config.iterations,
                     lr=config.lr, seed=config.seed, **memory)


def _on_step(model: Any, monitor: ProbeMonitor, rows: _ProbeRows, esd_config: ESDConfig, out: Path,
             config: DemoConfig, echo: Callable[[str], Any]) -> Callable[[int, float], bool]:
    """The ESD callback: the slow-step hint, then at each probe step a row, a checkpoint and the stop decision."""
    slow_steps = SlowStepHint(config.slow_step_factor)
    step_started = [time.perf_counter()]  # when the current ESD step began (probing and saving excluded)

    def on_step(iteration: int, loss: float) -> bool:
        step = iteration + 1
        hint = slow_steps.observe(step, time.perf_counter() - step_started[0])
        if hint is not None:
            echo(hint)
        stop = False
        if monitor.maybe_probe(step) is not None:
            rows.record(step)
            save_esd_adapter(model, out / "checkpoints" / f"checkpoint-{step}", config=esd_config)
            stop = monitor.should_stop
        step_started[0] = time.perf_counter()
        return stop

    return on_step


def _gate(model: Any, held_out: Any, config: DemoConfig, progress: bool,
          echo: Callable[[str], Any]) -> tuple[dict[str, Any], Any]:
    """Probe the final adapter on the held-out set with the gate's preset and rule; the gate record and the probe."""
    gate_result = probe(model, held_out.concept, held_out.concept_prompts, reference=held_out.reference,
                        reference_prompts=held_out.reference_prompts,
                        config=ProbeConfig.from_preset(config.gate_preset, seed=config.seed, progress=progress))
    md, memory = gate_result.memory_distance, gate_result.memory
    psnr_mean = float(gate_result.erased.psnr.nanmean())
    entry = {"memory": interval_record(memory), "control_memory": control_record(gate_result),
             "d_n": None if md is None else md.value, "ci_low": None if md is None else md.ci_low,
             "ci_high": None if md is None else md.ci_high, "psnr_mean": psnr_mean, "notes": gate_result.notes}
    decision = decide(entry, Thresholds(max_memory=config.gate_max_memory))
    gate = {"preset": config.gate_preset, "max_memory": config.gate_max_memory,
            "memory": entry["memory"] and memory.value, "memory_low": entry["memory"] and memory.ci_low,
            "memory_high": entry["memory"] and memory.ci_high, "d_n": entry["d_n"], "ci_low": entry["ci_low"],
            "ci_high": entry["ci_high"], "psnr_mean": psnr_mean, "passed": decision.passed, "verdict": decision.verdict,
            "control_memory": entry["control_memory"] and entry["control_memory"]["value"], "reasons": decision.reasons}
    verdict = {"pass": "PASS", "fail": "FAIL: still remembers", "inconclusive": "INCONCLUSIVE"}[decision.verdict]
    echo(f"gate ({config.gate_preset}, {len(held_out.concept)} + {len(held_out.reference)} held-out images): "
         f"{'; '.join(decision.reasons)}; d_N = "
         f"{_interval(gate['d_n'], gate['ci_low'], gate['ci_high'])} -> {verdict}")
    return gate, gate_result


def _write_outputs(out: Path, result: dict[str, Any], rows: list[dict[str, Any]], gate: dict[str, Any],
                   target: dict[str, Any], config: DemoConfig, stopped_at: int | None,
                   echo: Callable[[str], Any]) -> None:
    """result.json and report.md, and where they (and the adapter) went and how to gate the checkpoints."""
    write_text_atomic(out / "result.json", json.dumps(result, indent=2, default=str))
    write_text_atomic(out / "report.md", _report_markdown(rows, gate, target, config, out, stopped_at))
    echo(f"wrote {(out / 'result.json').resolve()}, {(out / 'report.md').resolve()} and the adapter "
         f"{(out / 'adapter').resolve()} in {result['total_seconds']:.0f} s")
    echo(f"gate every probed checkpoint: unlearn-guard gate --model shapes-world --checkpoints {out / 'checkpoints'} "
         f"--concept-images {out / 'images' / 'concept'} --reference-images {out / 'images' / 'reference'}")


def run_demo(output_dir: str | Path = "unlearn_guard_outputs/demo", config: DemoConfig = DemoConfig(),
             progress: bool = True, echo=print) -> dict[str, Any]:
    """Run the main job; returns the JSON-ready result (also written to output_dir/result.json)."""
    started = time.perf_counter()
    model = load_world_model()
    classifier = load_classifier()
    # three sets of the concept's images: the loss trains on one, the monitor decides on another,
    # the gate reads a third (measured: a memory loss lowered the score of its own images while
    # other images of the concept still remembered)
    loss_set = probe_sets(config.concept, config.images_per_set, seed=10_000 + config.seed)
    watched = probe_sets(config.concept, config.images_per_set, seed=40_000 + config.seed)
    monitor_probe = ProbeConfig.from_preset(config.monitor_preset, seed=config.seed, progress=False)
    target = measure_target(config, monitor_probe, tuple(watched))
    memory_aware = config.memory_loss != "none"
    monitor, prompt_check = _build_monitor(model, classifier, config, watched, loss_set, monitor_probe, target,
                                           memory_aware)
    rows = _ProbeRows(model, classifier, monitor, config, memory_aware, echo)
    out = Path(output_dir)
    held_out = probe_sets(config.concept, config.images_per_set, seed=70_000 + config.seed)  # the gate's set
    save_image_folder(out / "images" / "concept", held_out.concept, held_out.concept_prompts, prefix=config.concept)
    save_image_folder(out / "images" / "reference", held_out.reference, held_out.reference_prompts, prefix="other")

    _echo_plan(echo, config, target, len(loss_set.concept), memory_aware)
    monitor.probe_now(0)
    rows.record(0)

    esd_config = _esd_config(config, monitor_probe, memory_aware)
    # the monitor probes at the steps on_step records (each step is probed once); esd_lora_erase
    # reads its seeds and weight for the memory loss
    training = esd_lora_erase(model, esd_config, on_step=_on_step(model, monitor, rows, esd_config, out, config, echo),
                              progress=progress, monitor=monitor if memory_aware else None)
    stopped_at = len(training.losses) if training.stopped_early else None
    if stopped_at is not None:
        echo(f"early stop at step {stopped_at} of {config.iterations}: {target['description']}, and the prompt's "
             f"accuracy {rows.rows[-1]['concept_accuracy']:.2f} <= {config.max_prompt_accuracy:g}")
    elif rows.rows[-1]["step"] != config.iterations:
        monitor.probe_now(config.iterations)
        rows.record(config.iterations)
        save_esd_adapter(model, out / "checkpoints" / f"checkpoint-{config.iterations}", config=esd_config)

    gate, gate_result = _gate(model, held_out, config, progress, echo)
    save_esd_adapter(model, out / "adapter", config=esd_config)
    result = {
        "demo_config": dataclasses.asdict(config),
        "esd_config": esd_config.to_dict(),
        "target": target,
        "prompt_check": prompt_check.to_dict(),
        "image_sets": {"memory_loss": 10_000 + config.seed if memory_aware else None,
                       "monitor": 40_000 + config.seed, "gate": 70_000 + config.seed},
        "probes": rows.rows,
        "stopped_at": stopped_at,
        "gate": gate,
        "gate_probe": gate_result.to_dict(),
        "memory_loss": None if not memory_aware else {
            "kind": config.memory_loss, "weights": training.memory_loss_weights, "values": training.memory_losses,
            "seconds": training.memory_loss_seconds},
        "training_seconds": training.seconds,
        "probe_overhead_seconds": monitor.overhead_seconds,
        "total_seconds": time.perf_counter() - started,
        "provenance": provenance(model.device, model.dtype, seed=config.seed, **model_provenance(model)),
    }
    _write_outputs(out, result, rows.rows, gate, target, config, stopped_at, echo)
    return result

