"""The MoFC paper's table, replayed in the small world: original vs ESD-erased, per concept.

For each concept: erase it from the shipped model with ESD-LoRA, then report side by side for
the original and the erased model: classifier accuracy of images generated from the concept's
prompt, reconstruction PSNR of the concept's images through the probe, and d_N with both
distance kinds (Gaussian squared-W2 "mofc" and empirical W1), computed from the same seeds.
Appends the table with provenance to benchmarks/RESULTS.md. Report what comes out.

    .venv/bin/python benchmarks/replay_paper_table.py                       # circle, square, triangle
    .venv/bin/python benchmarks/replay_paper_table.py --concepts all --iterations 300
"""

from __future__ import annotations

import argparse
import time

import torch

from unlearn_guard import ProbeConfig, probe
from unlearn_guard.stats import memory_distance
from unlearn_guard.trainers import ESDConfig, esd_lora_erase
from unlearn_guard.world import SHAPES, concept_prompt, load_classifier, load_world_model
from unlearn_guard.world.evaluate import accuracy_from_prompt, kept_accuracy, probe_sets

from _results import append_results, markdown_table


def measure(model, classifier, concept: str, sets, config: ProbeConfig, accuracy_images: int, seed: int) -> dict:
    erased, erased_prompts, reference, reference_prompts = sets
    result = probe(model, erased, erased_prompts, reference=reference, reference_prompts=reference_prompts, config=config)
    normal = result.normal_nll
    w1 = memory_distance(result.erased.nll, result.reference.nll, normal, kind="w1",
                         bootstrap_samples=config.bootstrap_samples, seed=seed)
    return {
        "accuracy": accuracy_from_prompt(model, classifier, concept, accuracy_images, seed=30_000 + seed),
        "kept": kept_accuracy(model, classifier, concept, accuracy_images // 2, seed=40_000 + seed),
        "psnr": float(result.erased.psnr.mean()),
        "d_n_mofc": result.memory_distance.value,
        "ci_mofc": (result.memory_distance.ci_low, result.memory_distance.ci_high),
        "d_n_w1": w1.value,
        "nll_e": float(result.erased.nll.mean()),
        "nll_r": float(result.reference.nll.mean()),
        "nll_n": float(normal.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", default="circle,square,triangle", help="comma list, or 'all'")
    parser.add_argument("--method", default="esd-x", choices=["esd-x", "esd-u"])
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--images", type=int, default=8, help="images in E and in R")
    parser.add_argument("--accuracy-images", type=int, default=16)
    parser.add_argument("--preset", default="mofc")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (1 when the machine is shared)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    concepts = list(SHAPES) if args.concepts == "all" else args.concepts.split(",")
    config = ProbeConfig.from_preset(args.preset, seed=args.seed, progress=False, bootstrap_samples=500)
    classifier = load_classifier()
    rows = []
    started = time.perf_counter()
    for concept in concepts:
        sets = probe_sets(concept, args.images, seed=10_000 + args.seed)
        original = measure(load_world_model(), classifier, concept, sets, config, args.accuracy_images, args.seed)
        model = load_world_model()
        esd = ESDConfig(concept=concept_prompt(concept), method=args.method, iterations=args.iterations, lr=args.lr,
                        seed=args.seed)
        esd_lora_erase(model, esd, progress=False)
        erased = measure(model, classifier, concept, sets, config, args.accuracy_images, args.seed)
        for name, m in (("original", original), (f"{args.method} {args.iterations} it", erased)):
            rows.append((concept, name, f"{m['accuracy']:.2f}", f"{m['kept']:.2f}", f"{m['psnr']:.2f}",
                         f"{m['d_n_mofc']:.3f} [{m['ci_mofc'][0]:.2f}, {m['ci_mofc'][1]:.2f}]", f"{m['d_n_w1']:.3f}",
                         f"{m['nll_e']:.1f} / {m['nll_r']:.1f} / {m['nll_n']:.1f}"))
        print(f"{concept}: done ({time.perf_counter() - started:.0f} s)", flush=True)

    header = ("concept", "model", "concept acc", "kept acc", "PSNR E (dB)", "d_N mofc [95% CI]", "d_N w1",
              "NLL mean E / R / N")
    table = markdown_table(header, rows)
    print(table)
    if not args.no_record:
        append_results(f"replay_paper_table: shapes world, {args.method} LoRA {args.iterations} it lr {args.lr}, "
                       f"preset {args.preset}, |E|=|R|={args.images}, {time.perf_counter() - started:.0f} s", table)


if __name__ == "__main__":
    main()
