"""Experiment: does memory-aware ESD (trajectories from the probe's seeds) raise d_N beyond plain ESD?

Setup (one run, same model, seed, iterations and lr):
  1. probe the original model on a *training* pool of concept images (keep the seeds z_T: where
     the concept still lives);
  2. plain ESD-LoRA vs memory-aware ESD-LoRA (a fraction of iterations start the x_t trajectory
     from those seeds, weighted by memory_weight), equal steps;
  3. evaluate both on *held-out* concept images (other renders): d_N (mofc), reconstruction PSNR,
     concept accuracy from the prompt, and accuracy on the kept concepts (damage).
An experiment, not a promise: the table is appended to benchmarks/RESULTS.md whatever it shows.

    .venv/bin/python benchmarks/memory_aware_erasure.py --iterations 150 --memory-weight 1.0
"""

from __future__ import annotations

import argparse
import time

import torch

from unlearn_guard import ProbeConfig, probe
from unlearn_guard.trainers import ESDConfig, esd_lora_erase
from unlearn_guard.world import concept_prompt, load_classifier, load_world_model
from unlearn_guard.world.evaluate import accuracy_from_prompt, kept_accuracy, probe_sets

from _results import append_results, markdown_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concept", default="circle")
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--memory-weight", type=float, default=1.0)
    parser.add_argument("--memory-fraction", type=float, default=0.5)
    parser.add_argument("--pool", type=int, default=16, help="concept images whose seeds train the memory term")
    parser.add_argument("--images", type=int, default=8, help="held-out E and R for evaluation")
    parser.add_argument("--accuracy-images", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (1 when the machine is shared)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    mofc = ProbeConfig.from_preset("mofc", seed=args.seed, progress=False, bootstrap_samples=500)
    pool, pool_prompts, _, _ = probe_sets(args.concept, args.pool, seed=50_000 + args.seed)
    found = probe(load_world_model(), pool, pool_prompts, config=mofc, keep_seeds=True)
    memory_seeds = found.erased.seeds  # (pool, 4, 8, 8)

    erased, erased_prompts, reference, reference_prompts = probe_sets(args.concept, args.images, seed=10_000 + args.seed)
    classifier = load_classifier()
    rows = []
    for name, weight in (("plain ESD", 0.0), (f"memory-aware (w={args.memory_weight}, f={args.memory_fraction})",
                                              args.memory_weight)):
        model = load_world_model()
        esd = ESDConfig(concept=concept_prompt(args.concept), iterations=args.iterations, lr=args.lr, seed=args.seed,
                        memory_weight=weight, memory_fraction=args.memory_fraction)
        esd_lora_erase(model, esd, memory_seeds=memory_seeds if weight > 0 else None, progress=False)
        result = probe(model, erased, erased_prompts, reference=reference, reference_prompts=reference_prompts,
                       config=mofc)
        md = result.memory_distance
        rows.append((name, f"{md.value:.3f} [{md.ci_low:.2f}, {md.ci_high:.2f}]", f"{float(result.erased.psnr.mean()):.2f}",
                     f"{accuracy_from_prompt(model, classifier, args.concept, args.accuracy_images, 30_000):.2f}",
                     f"{kept_accuracy(model, classifier, args.concept, args.accuracy_images // 2, 40_000):.2f}"))
        print(f"{name}: done ({time.perf_counter() - started:.0f} s)", flush=True)

    header = ("erasure", "d_N mofc [95% CI] (held-out E)", "PSNR E (dB)", "concept acc", "kept acc")
    table = markdown_table(header, rows)
    print(table)
    if not args.no_record:
        append_results(f"memory_aware_erasure: shapes world, erase '{args.concept}', esd-x LoRA {args.iterations} it "
                       f"lr {args.lr}, memory pool {args.pool} seeds, |E|=|R|={args.images} held out, "
                       f"{time.perf_counter() - started:.0f} s", table)


if __name__ == "__main__":
    main()
