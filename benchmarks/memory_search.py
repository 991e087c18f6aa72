"""Multi-memory search (MoFC's Sequential Inversion Block, SPEC 6) in the small world.

For one concept and three models (the original world, ESD-x LoRA, the world retrained without the
concept): M memories per concept image (its own seed and M - 1 found from support images of other
shapes), with the `mofc` probe preset for every diffusion inversion. Reported per model: distinct
memories that reconstruct an image (the memory score's cut, m > 0), mean cosine distance among the
memories and to the image's own seed, Euclidean distance to it, PSNR, the best-of-M memory score
beside the single-seed one, seconds. The paper (SD 1.4): mean cosine distances 0.58 to 0.69, PSNR
about 20 to 28 dB, Euclidean distance to the query's seed 152.1 +- 2.7 (for 16,384 entries; these
seeds have 256).

On the original model it also measures the decoder-inversion budget: `fidelity="fast"` against
MoFC's 3000 steps (`mofc`): cost, the decoded latents' PSNR, and the agreement of the memories they
lead to (cosine similarity of corresponding seeds, PSNR difference), and the `paper` variant beside
the `released` one. Prints the tables and appends them to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/memory_search.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from unlearn_guard import ProbeConfig
from unlearn_guard.attacks import MemorySearchConfig, find_memories
from unlearn_guard.trainers import ESDConfig, esd_lora_erase
from unlearn_guard.world import concept_prompt, load_world_model
from unlearn_guard.world.evaluate import probe_sets

from _results import append_results, markdown_table


def fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def row(name: str, result, seconds: float) -> tuple:
    s = result.summary()
    among = [i.mean_cosine_among for i in result.images if i.mean_cosine_among is not None]
    best = result.memory
    return (name, result.search.variant, f"{result.search.fidelity} ({result.search.steps})",
            f"{fmt(s['distinct_memories_mean'], 2)} of {s['memories_per_image']}",
            f"{fmt(s['mean_cosine_among'])} +- {fmt(statistics.pstdev(among) if len(among) > 1 else None)}",
            fmt(s["mean_cosine_to_own"]), fmt(s["mean_euclidean_to_own"], 1), fmt(s["psnr_mean_own"], 2),
            fmt(s["psnr_mean_support_memories"], 2), fmt(s["decoder_psnr_mean"], 2),
            "-" if best is None else f"{best.value:.3f} [{best.ci_low:.2f}, {best.ci_high:.2f}]",
            fmt(s["memory_single"]), f"{seconds:.0f}")


def agreement(fast, slow) -> tuple:
    """Corresponding support-started memories of two budgets: seed cosine similarity and |PSNR difference|."""
    a, b = fast.seeds[:, 1:].flatten(2), slow.seeds[:, 1:].flatten(2)  # (Q, M-1, D)
    cosine = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).flatten()
    psnr_a = torch.tensor([m.psnr for i in fast.images for m in i.memories[1:]])
    psnr_b = torch.tensor([m.psnr for i in slow.images for m in i.memories[1:]])
    return (f"{cosine.mean():.3f} (min {cosine.min():.3f})", f"{(psnr_a - psnr_b).abs().mean():.2f}",
            f"{fast.summary()['decoder_psnr_mean']:.2f} / {slow.summary()['decoder_psnr_mean']:.2f}",
            f"{fast.seconds['decoder_inversion']:.1f} / {slow.seconds['decoder_inversion']:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concept", default="circle", help="circle or square (the shipped retrained worlds)")
    parser.add_argument("--images", type=int, default=6, help="concept images (queries) and reference images")
    parser.add_argument("--memories", type=int, default=6, help="M, the own seed included")
    parser.add_argument("--preset", default="mofc", help="probe preset of every diffusion inversion")
    parser.add_argument("--esd-iterations", type=int, default=300)
    parser.add_argument("--esd-lr", type=float, default=1e-3)
    parser.add_argument("--compare", default="fidelity,variant",
                        help="extra runs on the original model: fidelity (mofc's 3000 steps), variant (paper); '' none")
    parser.add_argument("--decoder-steps", type=int, default=None, help="override the fast budget (smoke tests)")
    parser.add_argument("--mofc-steps", type=int, default=None, help="override mofc's 3000 steps (smoke tests)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    queries, prompts, reference, reference_prompts = probe_sets(args.concept, args.images, seed=10_000 + args.seed)
    support = probe_sets(args.concept, args.memories - 1, seed=20_000 + args.seed).reference  # other shapes
    config = ProbeConfig.from_preset(args.preset, seed=args.seed, progress=False, bootstrap_samples=500,
                                     keep_seeds=True)
    search = MemorySearchConfig(memories=args.memories, decoder_steps=args.decoder_steps)
    started = time.perf_counter()
    erased = load_world_model()
    esd_lora_erase(erased, ESDConfig(concept=concept_prompt(args.concept), iterations=args.esd_iterations, lr=args.esd_lr,
                                     seed=args.seed), progress=False)
    models = [("original", load_world_model()), (f"ESD-x {args.esd_iterations} it", erased),
              (f"retrained without {args.concept}", load_world_model(without=args.concept))]

    def run(model, search_config):
        t = time.perf_counter()
        result = find_memories(model, queries, prompts, support=support, reference=reference,
                               reference_prompts=reference_prompts, config=config, search=search_config)
        return result, time.perf_counter() - t

    rows, agree = [], []
    for name, model in models:
        result, seconds = run(model, search)
        rows.append(row(name, result, seconds))
        print(f"{name}: done ({time.perf_counter() - started:.0f} s)", flush=True)
        if name == "original":
            compare = [c for c in args.compare.split(",") if c]
            if "fidelity" in compare:
                slow, slow_s = run(model, search.replace(fidelity="mofc", decoder_steps=args.mofc_steps))
                rows.append(row(name, slow, slow_s))
                agree.append((f"fast ({search.steps}) vs mofc ({slow.search.steps})", *agreement(result, slow)))
            if "variant" in compare:
                paper, paper_s = run(model, search.replace(variant="paper"))
                rows.append(row(name, paper, paper_s))
                agree.append(("released vs paper (same budget)", *agreement(result, paper)))
    header = ("model", "variant", "fidelity (decoder steps)", "distinct memories / image", "cosine among (mean +- sd)",
              "cosine to own", "euclid to own", "PSNR own (dB)", "PSNR other memories", "decoder PSNR",
              "best-of-M memory M [95%]", "single-seed M", "s")
    table = markdown_table(header, rows)
    print(table)
    body = table
    if agree:
        agree_table = markdown_table(("comparison (original model)", "seed cosine similarity", "mean |dPSNR| (dB)",
                                      "decoder PSNR (dB)", "decoder s"), agree)
        print(agree_table)
        body += "\n\n" + agree_table
    if not args.no_record:
        append_results(f"memory_search: shapes world, {args.concept}, {args.images} images, M={args.memories}, preset "
                       f"{args.preset}, ESD-x {args.esd_iterations} it lr {args.esd_lr}, {args.threads} thread(s), "
                       f"{time.perf_counter() - started:.0f} s", body)


if __name__ == "__main__":
    main()
