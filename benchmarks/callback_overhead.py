"""Probe-callback overhead during ESD-LoRA erasure, and whether the monitor's preset ranks checkpoints like `mofc`.

One run, same model, seed and settings:
  A. ESD-LoRA for N iterations without the callback (wall seconds);
  B. the same with a `ProbeMonitor` every K steps (default: the monitor's own cadence and preset):
     overhead = (B - A) / A, and the share of B spent probing (the number that does not move with
     run-to-run noise); at every probe the LoRA weights are kept as a checkpoint;
  C. every checkpoint re-probed with `mofc`: Spearman rank correlation of the memory score and of
     d_N between the monitor's preset and mofc over the checkpoints (SPEC 5: a cheaper preset is
     only useful if it ranks models like mofc; benchmarks/calibrate_memory_signal.py measures it
     over the calibration models).
Appends both tables to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/callback_overhead.py                      # monitor defaults, 500 iterations
    .venv/bin/python benchmarks/callback_overhead.py --iterations 150 --every 25 --preset fast
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import torch
from scipy.stats import spearmanr

from unlearn_guard import ProbeConfig, probe
from unlearn_guard.callbacks import MonitorConfig, ProbeMonitor
from unlearn_guard.trainers import ESDConfig, esd_lora_erase
from unlearn_guard.world import concept_prompt, load_world_model
from unlearn_guard.world.evaluate import probe_sets

from _results import append_results, markdown_table

# Part C re-probes for the rank comparison of M only: the negative control is off there (and its
# warning); the monitor's own probes keep the default control, as a user's run has it.
warnings.filterwarnings("ignore", message="the negative control is off")


def lora_state(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in unet.named_parameters() if "lora_" in name}


def load_lora_state(unet: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if name in state:
                p.copy_(state[name])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concept", default="circle")
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--every", type=int, default=MonitorConfig().every_n_steps, help="probe cadence (default: the monitor's)")
    parser.add_argument("--preset", default=MonitorConfig().probe.preset, help="monitor preset (default: the monitor's)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (1 when the machine is shared)")
    parser.add_argument("--no-rank", action="store_true", help="skip C (the mofc re-probes): overhead only")
    parser.add_argument("--rank-preset", default="mofc",
                        help="the preset C re-probes every checkpoint with (mofc; smoke runs pass a cheap one)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    sets = probe_sets(args.concept, args.images, seed=10_000 + args.seed)
    erased, erased_prompts, reference, reference_prompts = sets
    esd = ESDConfig(concept=concept_prompt(args.concept), iterations=args.iterations, lr=args.lr, seed=args.seed)

    # A. no callback
    model = load_world_model()
    plain = esd_lora_erase(model, esd, progress=False)

    # B. with the callback every K steps (fast), keeping a checkpoint at each probe
    model = load_world_model()
    cheap = ProbeConfig.from_preset(args.preset, seed=args.seed, progress=False)
    monitor = ProbeMonitor(model, erased, erased_prompts, reference=reference, reference_prompts=reference_prompts,
                           config=MonitorConfig(every_n_steps=args.every, probe=cheap))
    checkpoints: dict[int, dict[str, torch.Tensor]] = {}

    def on_step(iteration: int, loss: float) -> None:
        if monitor.maybe_probe(iteration + 1) is not None:
            checkpoints[iteration + 1] = lora_state(model.unet)

    started = time.perf_counter()
    monitored = esd_lora_erase(model, esd, on_step=on_step, progress=False)
    with_callback = time.perf_counter() - started
    overhead = (with_callback - plain.seconds) / plain.seconds

    # C. re-probe every checkpoint with mofc (--rank-preset)
    mofc = ProbeConfig.from_preset(args.rank_preset, seed=args.seed, progress=False, control_images=0)
    pairs = []
    for record in [] if args.no_rank else monitor.history:
        load_lora_state(model.unet, checkpoints[record.step])
        result = probe(model, erased, erased_prompts, reference=reference, reference_prompts=reference_prompts,
                       config=mofc)
        pairs.append((record.step, record.memory, result.memory_value, record.d_n, result.d_n, record.seconds))
    rho_m = spearmanr([p[1] for p in pairs], [p[2] for p in pairs]).statistic if len(pairs) > 2 else float("nan")
    rho_d = spearmanr([p[3] for p in pairs], [p[4] for p in pairs]).statistic if len(pairs) > 2 else float("nan")

    overhead_table = markdown_table(
        ("run", "ESD iterations", "probe every", "probes", "wall s", "probe s", "probe share of the run",
         "overhead vs no callback"),
        [("no callback", args.iterations, "-", 0, f"{plain.seconds:.1f}", "0", "-", "-"),
         (f"ProbeMonitor ({args.preset}, E=R={args.images})", args.iterations, args.every, len(monitor.history),
          f"{with_callback:.1f}", f"{monitor.overhead_seconds:.1f}", f"{100 * monitor.overhead_seconds / with_callback:.1f}%",
          f"{100 * overhead:+.1f}%")],
    )
    rank_table = markdown_table((
        "step", f"memory {args.preset}", f"memory {args.rank_preset}", f"d_N {args.preset}", f"d_N {args.rank_preset}",
        f"{args.preset} probe s"),
        [(s, m1, m2, d1, d2, f"{sec:.1f}") for s, m1, m2, d1, d2, sec in pairs])
    rank_table += (f"\n\nSpearman rank correlation {args.preset} vs {args.rank_preset} over {len(pairs)} checkpoints: memory score "
                   f"rho = {rho_m:.3f}, d_N rho = {rho_d:.3f}")
    load = "load average (1/5/15 min) at the end: " + "/".join(f"{v:.2f}" for v in os.getloadavg())
    overhead_table += f"\n\n{os.cpu_count()} CPUs; {load}"
    if args.no_rank:
        rank_table = "(rank agreement not measured in this run: --no-rank)"
    print(overhead_table)
    print(rank_table)
    if not args.no_record:
        append_results(f"callback_overhead: shapes world, erase '{args.concept}' esd-x LoRA lr {args.lr}, "
                       f"{args.threads} thread(s)",
                       f"{overhead_table}\n\n{rank_table}")


if __name__ == "__main__":
    main()
