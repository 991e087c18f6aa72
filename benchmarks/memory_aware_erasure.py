"""Experiment: ESD alone vs ESD + a differentiable memory loss, at equal steps and at equal wall
time, with the step where early stop on the calibrated memory score would have fired.

Per concept (default circle, square, triangle; retrained worlds ship for circle and square, and
for triangle once `train-world --exclude triangle` has run):
  1. A `ProbeMonitor`, preset --monitor-preset (`track`) with its seeds kept, every --every
     steps, signal "memory". The memory loss trains on a pool of the concept's images (seed
     50_000 + seed; the monitor's `loss_images`, whose seeds it hands to the loss); with
     --decide-on watch (default) every decision reads a separate watch set (E and R, seed
     80_000 + seed) that the loss never sees; --decide-on pool decides on the pool itself (the
     earlier design, kept to show the difference). The target is the upper end of the retrained
     world's M on the decision set with that preset (the calibrated gate threshold where no
     retrained world ships), and with --max-prompt-accuracy (default 0.1; negative: off) a
     `PromptCheck` also requires "a <concept>" to draw the concept in at most that share of
     --accuracy-images generations. The monitor weights the memory loss (--loss-weight monitor:
     up to --regularization-max). Training is *not* cut: the step at which the monitor says stop
     is recorded, with the steps and training time stopping there would have saved, and every
     run goes on, so that runs compare at equal steps.
  2. ESD + memory loss (`ESDConfig(memory_loss=...)`, default `AnchorPathConfig`), N
     iterations: training time T (probe time excluded).
     Where early stop fired, the LoRA weights at that step are evaluated too (the model early
     stop would have shipped), as the row "..., stopped early".
  3. ESD alone, same seed and draws: its LoRA is snapshotted at N (equal steps) and it trains on
     until its training time reaches T (equal wall time).
  4. Every model, with the original and the retrained one, on *held-out* images (seed 900_000 +
     seed, far from every tuning seed), probed with --eval-preset (`mofc`, the calibrated one):
     memory score M with its 95% interval and |M - M_retrained|, d_N with its interval, PSNR of
     E, concept accuracy from its prompt, kept-concept accuracy, Concept Inversion attack
     success (Wilson interval; --ci-steps 0 skips it).
The loss settings (lr 3e-3, anchor_path with null weight 0 and keep weight 1, weight up to 10)
were chosen on the training pool of circle only (ablations in RESULTS.md); nothing was tuned
on the held-out images or on square and triangle.
Tables (runs; signal vs step) go to benchmarks/RESULTS.md, whatever they show.

    .venv/bin/python benchmarks/memory_aware_erasure.py --threads 1
    .venv/bin/python benchmarks/memory_aware_erasure.py --concepts circle --iterations 60 --ci-steps 0
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

import torch

from unlearn_guard import ProbeConfig, probe
from unlearn_guard.attacks import ShapeJudge
from unlearn_guard.callbacks import MonitorConfig, ProbeMonitor, PromptCheck
from unlearn_guard.demo import DemoConfig, measure_target
from unlearn_guard.errors import ModelError
from unlearn_guard.losses import AnchorPathConfig, InversionLikelihoodConfig, SeedRecallConfig
from unlearn_guard.signal import DEFAULT_MAX_MEMORY
from unlearn_guard.trainers import ESDConfig, esd_lora_erase
from unlearn_guard.world import concept_prompt, load_classifier, load_world_model
from unlearn_guard.world.evaluate import accuracy_from_prompt, kept_accuracy, probe_sets

from _results import append_results, markdown_table

# This script measures the inversion and the memory score, not the negative control: the control is
# off (control_images=0), which also keeps its images out of the timings, and so is its warning.
warnings.filterwarnings("ignore", message="the negative control is off")

POOL_SEED, WATCH_SEED, HELD_OUT_SEED = 50_000, 80_000, 900_000  # loss pool, monitor's decision set, evaluation


class ObservingMonitor(ProbeMonitor):
    """A monitor that records where it would stop training (`stop_step`, with the LoRA weights
    there, `stop_snapshot`) but never stops it, so the runs it watches can be compared at equal
    steps and the model early stop would have shipped can be evaluated too."""

    stop_step: int | None = None
    stop_snapshot: dict[str, torch.Tensor] | None = None

    @property
    def should_stop(self) -> bool:
        return False  # never cuts training (not even at step 0); `would_stop` holds the decision

    @property
    def would_stop(self) -> bool:
        return self.stop_reason is not None

    def step(self, step: int) -> bool:
        self.maybe_probe(step)
        if self.would_stop and self.stop_step is None:
            self.stop_step = step
            self.stop_snapshot = lora_weights(self.model.unet)
        return False


def lora_weights(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in unet.state_dict().items() if ".lora_" in k}


def memory_loss_config(args: argparse.Namespace):
    if args.loss == "seed_recall":
        return SeedRecallConfig(steps=args.loss_steps, tau=args.tau)
    if args.loss == "anchor_path":
        return AnchorPathConfig(steps=args.loss_steps, timesteps=args.timesteps, noise=args.noise,
                                null_weight=args.null_weight, keep_weight=args.keep_weight,
                                random_paths=args.random_paths, min_noise=args.min_noise,
                                guidance=args.guidance, seed=args.seed)
    return InversionLikelihoodConfig(steps=args.loss_steps, keep_weight=args.keep_weight)


def early_stop_target(concept: str, args: argparse.Namespace) -> tuple[float, str]:
    """The monitor's target: the upper end of the memory score of the world retrained without the
    concept, on the monitor's own pool and preset (the ground truth, as the demo measures it); the
    calibrated gate threshold when no retrained world ships or its interval reaches 1."""
    if args.target is not None:
        return args.target, "given"
    decided_on = probe_sets(concept, args.pool, seed=decision_seed(args))
    preset = ProbeConfig.from_preset(args.monitor_preset, seed=args.seed, progress=False, control_images=0)
    measured = measure_target(DemoConfig(concept=concept), preset, tuple(decided_on))
    if measured["memory"] is None and measured["target"] is not None:
        return measured["target"], "calibrated threshold (no retrained world)"
    if measured["target"] is None:
        return DEFAULT_MAX_MEMORY, "calibrated threshold (the retrained world's interval reaches 1)"
    shown = interval(measured["memory"], measured["memory_low"], measured["memory_high"])
    return measured["target"], f"retrained world's upper end (M = {shown})"


def decision_seed(args: argparse.Namespace) -> int:
    """The seed of the images every decision reads: the watch set, or the loss's own pool."""
    return (WATCH_SEED if args.decide_on == "watch" else POOL_SEED) + args.seed


def make_monitor(model, concept: str, args: argparse.Namespace, target: float, memory: bool,
                 classifier) -> ObservingMonitor:
    pool = probe_sets(concept, args.pool, seed=POOL_SEED + args.seed)
    decided_on = probe_sets(concept, args.pool, seed=decision_seed(args))
    preset = ProbeConfig.from_preset(args.monitor_preset, seed=args.seed, progress=False, keep_seeds=True,
                                     control_images=0)
    config = MonitorConfig(every_n_steps=args.every, probe=preset, signal="memory", target=target,
                           regularization_max=args.regularization_max, regularization_min=args.regularization_min)
    separate = memory and args.decide_on == "watch"
    check = None
    if args.max_prompt_accuracy >= 0:
        check = PromptCheck(concept_prompt(concept), ShapeJudge(concept, classifier), max_success=args.max_prompt_accuracy,
                            n=args.accuracy_images, seed=20_000 + args.seed)
    return ObservingMonitor(model, decided_on.concept, decided_on.concept_prompts, reference=decided_on.reference,
                            reference_prompts=decided_on.reference_prompts, config=config, name=f"{concept}",
                            loss_images=pool.concept if separate else None,
                            loss_prompts=pool.concept_prompts if separate else None, prompt_check=check)


def train(concept: str, args: argparse.Namespace, memory: bool, target: float, classifier,
          time_budget: float | None = None):
    """One ESD-x LoRA run on a fresh world model, watched by a monitor. Returns (model, result,
    monitor, training seconds, LoRA snapshot at N or None)."""
    model = load_world_model()
    monitor = make_monitor(model, concept, args, target, memory, classifier)
    changes: dict[str, Any] = {}
    if memory:
        weight = args.loss_weight if args.loss_weight == "monitor" else float(args.loss_weight)
        changes = dict(memory_loss=memory_loss_config(args), memory_loss_weight=weight, memory_loss_every=args.loss_every)
    iterations = args.iterations if time_budget is None else args.iterations * args.max_time_factor
    config = ESDConfig(concept=concept_prompt(concept), iterations=iterations, lr=args.lr, seed=args.seed,
                       method=args.method, **changes)
    snapshot: dict[str, torch.Tensor] = {}
    started = time.perf_counter()

    def on_step(iteration: int, loss: float) -> bool:
        if iteration + 1 == args.iterations:
            snapshot.update(lora_weights(model.unet))
        if time_budget is None:
            return False
        training = time.perf_counter() - started - monitor.overhead_seconds
        return iteration + 1 >= args.iterations and training >= time_budget

    result = esd_lora_erase(model, config, monitor=monitor, on_step=on_step, progress=False)
    seconds = result.seconds - monitor.overhead_seconds
    return model, result, monitor, seconds, snapshot


def evaluate(model, concept: str, args: argparse.Namespace, held_out, classifier, ci_images) -> dict[str, Any]:
    config = ProbeConfig.from_preset(args.eval_preset, seed=args.seed, progress=False, bootstrap_samples=500,
                                     control_images=0)
    result = probe(model, held_out.concept, held_out.concept_prompts, reference=held_out.reference,
                   reference_prompts=held_out.reference_prompts, config=config)
    out: dict[str, Any] = {"memory": result.memory, "d_n": result.memory_distance,
                           "psnr": result.erased.summary()["psnr_mean"]}
    out["acc"] = accuracy_from_prompt(model, classifier, concept, args.accuracy_images, 30_000 + args.seed)
    out["kept"] = kept_accuracy(model, classifier, concept, max(args.accuracy_images // 2, 1), 40_000 + args.seed)
    out["ci"] = None
    if args.ci_steps > 0:
        from unlearn_guard.attacks import ConceptInversionConfig, ShapeJudge, attack_success, concept_inversion

        ci_config = ConceptInversionConfig(steps=args.ci_steps, seed=args.seed, progress=False)
        learned = concept_inversion(model, ci_images, ci_config)
        out["ci"] = attack_success(model, learned, ShapeJudge(concept, classifier), n=args.ci_generations,
                                   seed=args.seed, keep_images=False)
    return out


def interval(value: float, low: float | None, high: float | None) -> str:
    return f"{value:.3f} [{low:.3f}, {high:.3f}]" if low is not None and high is not None else f"{value:.3f}"


def row(concept: str, name: str, steps: Any, seconds: Any, ev: dict[str, Any], retrained_memory: float | None,
        stop: str, saved: str) -> tuple:
    memory, d_n, ci = ev["memory"], ev["d_n"], ev["ci"]
    gap = "-" if retrained_memory is None or memory is None else f"{abs(memory.value - retrained_memory):.3f}"
    return (concept, name, steps, seconds,
            "-" if memory is None else interval(memory.value, memory.ci_low, memory.ci_high), gap,
            "-" if d_n is None else interval(d_n.value, d_n.ci_low, d_n.ci_high),
            "-" if ev["psnr"] is None else f"{ev['psnr']:.2f}", f"{ev['acc']:.2f}", f"{ev['kept']:.2f}",
            "-" if ci is None else f"{ci.rate:.2f} [{ci.ci_low:.2f}, {ci.ci_high:.2f}]", stop, saved)


def stop_cells(monitor: ObservingMonitor, steps: int, seconds: float) -> tuple[str, str]:
    """Where early stop on the memory target fired, and the steps / training seconds it saves."""
    if monitor.stop_step is None or monitor.stop_step > steps:
        return "not reached", "-"
    saved = steps - monitor.stop_step
    return str(monitor.stop_step), f"{saved} it / {seconds * saved / max(steps, 1):.0f} s"


def curve(monitor: ProbeMonitor) -> dict[int, tuple[str, str, str]]:
    """Per probe step: M on the decision images, M on the loss's own images, the prompt's accuracy."""
    def shown(value: float | None, digits: int = 2) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    return {r.step: (interval(r.memory, r.memory_low, r.memory_high),
                     "-" if r.loss_memory is None else interval(r.loss_memory, r.loss_memory_low, r.loss_memory_high),
                     shown(r.prompt_success)) for r in monitor.history if r.ok}


def build_parser() -> argparse.ArgumentParser:
    """The script's flags (also parsed by adversarial_prompt_world.py, which trains the same runs)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", default="circle,square,triangle")
    parser.add_argument("--iterations", type=int, default=150, help="N, the equal-steps budget")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--method", choices=("esd-x", "esd-u"), default="esd-x")
    parser.add_argument("--loss", choices=("anchor_path", "inversion_likelihood", "seed_recall"), default="anchor_path")
    parser.add_argument("--loss-steps", type=int, default=None,
                        help="S of the memory loss (default: the monitor preset's inversion steps, 20 for track)")
    parser.add_argument("--timesteps", type=int, default=2, help="anchor_path: timesteps per call")
    parser.add_argument("--noise", choices=("seeds", "fresh"), default="seeds", help="anchor_path: path noise")
    parser.add_argument("--null-weight", type=float, default=0.0, help="anchor_path: weight of the empty prompt")
    parser.add_argument("--random-paths", type=int, default=0, help="anchor_path: random paths per image and call")
    parser.add_argument("--min-noise", type=float, default=0.0, help="anchor_path: only timesteps t >= this * T")
    parser.add_argument("--guidance", type=float, default=0.0, help="anchor_path: guidance g past the anchor")
    parser.add_argument("--loss-weight", default="monitor", help="a number, or 'monitor' (its regularization_weight)")
    parser.add_argument("--regularization-max", type=float, default=10.0,
                        help="the monitor's weight while the concept is fully remembered (--loss-weight monitor)")
    parser.add_argument("--regularization-min", type=float, default=0.0,
                        help="the monitor's weight once M reaches the target (--loss-weight monitor)")
    parser.add_argument("--loss-every", type=int, default=1)
    parser.add_argument("--tau", type=float, default=0.1, help="seed_recall's distance scale")
    parser.add_argument("--keep-weight", type=float, default=1.0,
                        help="anchor on the monitor's reference images (anchor_path, inversion_likelihood; 0: off)")
    parser.add_argument("--monitor-preset", default="track", help="the monitor's probe preset (seeds kept)")
    parser.add_argument("--every", type=int, default=25, help="monitor cadence (steps)")
    parser.add_argument("--target", type=float, default=None,
                        help="memory score target (early stop); default: the retrained world's upper end on the pool")
    parser.add_argument("--pool", type=int, default=8,
                        help="images in the loss's pool and in the monitor's decision set (E and R)")
    parser.add_argument("--decide-on", choices=("watch", "pool"), default="watch",
                        help="the images every decision reads: a watch set the loss never sees, or the loss's pool")
    parser.add_argument("--max-prompt-accuracy", type=float, default=0.1,
                        help="early stop also needs the prompt's accuracy at most this (negative: memory alone)")
    parser.add_argument("--images", type=int, default=8, help="held-out E and R for evaluation")
    parser.add_argument("--eval-preset", default="mofc", help="held-out probe preset (mofc: the calibrated one)")
    parser.add_argument("--accuracy-images", type=int, default=16)
    parser.add_argument("--ci-steps", type=int, default=300, help="Concept Inversion steps (0: skip the attack)")
    parser.add_argument("--ci-images", type=int, default=8)
    parser.add_argument("--ci-generations", type=int, default=16)
    parser.add_argument("--max-time-factor", type=int, default=4, help="cap of the equal-time run, in units of N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (1 when the machine is shared)")
    parser.add_argument("--no-record", action="store_true")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.loss_weight != "monitor":
        float(args.loss_weight)  # a number, or argparse-style failure right away
    if args.loss_steps is None:
        args.loss_steps = ProbeConfig.from_preset(args.monitor_preset).inversion.num_steps
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="init_token")
    started = time.perf_counter()
    classifier = load_classifier()
    rows, curves, targets = [], [], []
    for concept in args.concepts.split(","):
        held_out = probe_sets(concept, args.images, seed=HELD_OUT_SEED + args.seed)
        ci_images = None
        if args.ci_steps > 0:
            from concept_inversion_attack import concept_images

            ci_images = concept_images(load_world_model(), classifier, concept, args.ci_images, seed=60_000 + args.seed)

        def measure(model):
            return evaluate(model, concept, args, held_out, classifier, ci_images)

        original = measure(load_world_model())
        try:
            retrained = measure(load_world_model(without=concept))
        except ModelError:
            retrained = None  # no retrained world ships for this concept
        reference = None if retrained is None or retrained["memory"] is None else retrained["memory"].value
        rows.append(row(concept, "original", 0, "-", original, reference, "-", "-"))
        if retrained is not None:
            rows.append(row(concept, f"retrained without {concept}", "-", "-", retrained, reference, "-", "-"))

        target, target_source = early_stop_target(concept, args)
        targets.append(f"{concept} {target:.3f} ({target_source})")
        print(f"{concept}: early-stop target M <= {target:.3f}, {target_source}", flush=True)
        model, result, monitor, seconds, _ = train(concept, args, memory=True, target=target, classifier=classifier)
        anchor = f", keep {args.keep_weight}" if args.loss != "seed_recall" and args.keep_weight > 0 else ""
        if args.loss == "anchor_path":
            anchor += f", null {args.null_weight}, {args.noise}, P={args.random_paths}, t >= {args.min_noise:g} T, g {args.guidance:g}"
        label = f"ESD + {args.loss} (w={args.loss_weight}{anchor})"
        steps = len(result.losses)
        rows.append(row(concept, label, steps, f"{seconds:.0f}", measure(model), reference,
                        *stop_cells(monitor, steps, seconds)))
        if monitor.stop_snapshot is not None and monitor.stop_step < steps:  # the model early stop ships
            model.unet.load_state_dict(monitor.stop_snapshot, strict=False)
            stopped_seconds = seconds * monitor.stop_step / max(steps, 1)
            rows.append(row(concept, f"{label}, stopped early", monitor.stop_step, f"{stopped_seconds:.0f}",
                            measure(model), reference, str(monitor.stop_step),
                            f"{steps - monitor.stop_step} it / {seconds - stopped_seconds:.0f} s"))
        memory_curve = curve(monitor)
        print(f"{concept}: {label} done ({time.perf_counter() - started:.0f} s)", flush=True)

        model, result, plain_monitor, plain_seconds, snapshot = train(concept, args, memory=False, target=target,
                                                                     classifier=classifier, time_budget=seconds)
        plain_steps = len(result.losses)
        final = measure(model)  # equal wall time
        model.unet.load_state_dict(snapshot, strict=False)  # back to the LoRA at N: equal steps
        at_n = measure(model)
        per_step = plain_seconds / max(plain_steps, 1)
        rows.append(row(concept, "ESD alone, equal steps", args.iterations, f"{per_step * args.iterations:.0f}", at_n,
                        reference, *stop_cells(plain_monitor, args.iterations, per_step * args.iterations)))
        rows.append(row(concept, "ESD alone, equal time", plain_steps, f"{plain_seconds:.0f}", final, reference,
                        *stop_cells(plain_monitor, plain_steps, plain_seconds)))
        plain_curve = curve(plain_monitor)
        for step in sorted(set(memory_curve) | set(plain_curve)):
            plain_cells, memory_cells = plain_curve.get(step, ("-",) * 3), memory_curve.get(step, ("-",) * 3)
            curves.append((concept, step, plain_cells[0], plain_cells[2], *memory_cells))
        print(f"{concept}: ESD alone done ({time.perf_counter() - started:.0f} s)", flush=True)

    header = ("concept", "model", "steps", "train s", "memory M [95%] (held out)", "|M - M retrained|",
              "d_N [95%]", "PSNR E (dB)", "concept acc", "kept acc",
              f"Concept Inversion success [95%] (n={args.ci_generations})", "early stop at", "saved")
    table = markdown_table(header, rows)
    decided = "watch set" if args.decide_on == "watch" else "loss pool"
    signal = markdown_table(("concept", "step", f"M {decided}: ESD alone", "prompt acc: ESD alone",
                             f"M {decided}: ESD + {args.loss}", f"M loss pool: ESD + {args.loss}",
                             f"prompt acc: ESD + {args.loss}"), curves)
    print(table)
    print()
    print(signal)
    if not args.no_record:
        append_results(
            f"memory_aware_erasure: shapes world, {args.method} LoRA N={args.iterations} it lr {args.lr}, {args.loss} "
            f"S={args.loss_steps} weight {args.loss_weight} (max {args.regularization_max}"
            + (f", min {args.regularization_min}" if args.regularization_min else "") + f") keep {args.keep_weight} every {args.loss_every}"
            + (f" timesteps {args.timesteps} null {args.null_weight} noise {args.noise} random paths {args.random_paths}"
               f" min noise {args.min_noise} guidance {args.guidance}"
               if args.loss == "anchor_path" else "")
            + f", monitor {args.monitor_preset} every {args.every} deciding on {args.pool}+{args.pool} "
            + ("watch images the loss never sees (loss on its own pool)" if args.decide_on == "watch" else
               "pool images (the loss's own)")
            + (f", prompt check acc <= {args.max_prompt_accuracy:g}" if args.max_prompt_accuracy >= 0 else "")
            + f", early-stop target {'; '.join(targets)}, eval {args.eval_preset} on "
            f"{args.images}+{args.images} held-out images, CI {args.ci_steps} steps, {args.threads} thread(s), "
            f"{time.perf_counter() - started:.0f} s",
            table + "\n\nSignal vs step, what the monitor read at each probe (M: value [95% interval]; prompt acc: "
            f"share of {args.accuracy_images} generations of the concept):\n\n" + signal)


if __name__ == "__main__":
    main()
