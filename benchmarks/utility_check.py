"""The utility check in the small world: does a destroyed checkpoint fail it, and an honest one pass?

Per erased concept (default circle, square, triangle: the shipped retrained worlds) the kept shapes
are the other five; each model's kept-shape accuracy (the shipped classifier on n generations per
shape, per setting of `WORLD_SETTINGS`) is divided by the original world's on the same seeds, and
the lowest ratio over the settings is the utility figure (`utility_check`). Models: the world
retrained without the concept (an erasure that keeps everything else: the ratio should be near 1),
and for the first concept also an ESD-x LoRA, the UNet re-initialised from its config, the UNet
zeroed, and the UNet with Gaussian noise of s times each tensor's own standard deviation added.

Two splits: the tuning seeds pick `min_ratio` as the midpoint between the highest worst-case ratio
of a destroyed UNet (re-initialised, zeroed) and the lowest of a retrained world, rounded down to
0.05; the held-out seeds then report every model's verdict at that threshold. Prints the tables
and appends them to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/utility_check.py --threads 1
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from unlearn_guard.sampling import as_settings
from unlearn_guard.utility import UtilityConfig, measure_utility, utility_check
from unlearn_guard.world import concept_prompt, load_classifier, load_world_model

from _results import append_results, markdown_table
from concept_inversion_attack import esd_checkpoints

DESTROYED = ("re-initialised UNet", "zeroed UNet")


@torch.no_grad()
def damaged(kind: str, scale: float = 0.0, seed: int = 0):
    """The shipped world with its UNet destroyed or perturbed (`kind`: reinit, zeros, noise)."""
    from diffusers import UNet2DConditionModel

    model = load_world_model()
    if kind == "reinit":
        torch.manual_seed(seed)
        model.unet.load_state_dict(UNet2DConditionModel.from_config(model.unet.config).state_dict())
    elif kind == "zeros":
        for parameter in model.unet.parameters():
            parameter.zero_()
    else:
        generator = torch.Generator().manual_seed(seed)
        for parameter in model.unet.parameters():
            spread = float(parameter.std()) if parameter.numel() > 1 else float(parameter.abs())
            parameter.add_(scale * spread * torch.randn(parameter.shape, generator=generator))
    return model


def ratio_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", default="circle,square,triangle", help="erased concepts with a shipped retrained world")
    parser.add_argument("--perturb", default="0.1,0.3,1.0", help="noise scales s (times each tensor's std); '' for none")
    parser.add_argument("--esd-iterations", type=int, default=300, help="an ESD-x LoRA of the first concept (0: none)")
    parser.add_argument("--esd-lr", type=float, default=3e-3, help="the demo's ESD-x learning rate")
    parser.add_argument("--generations", type=int, default=32, help="images per kept shape and setting")
    parser.add_argument("--settings", default="world", help="a named set or a comma list of SCHEDULER:GUIDANCE:STEPS")
    parser.add_argument("--tuning-seed", type=int, default=0)
    parser.add_argument("--held-out-seed", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    settings = as_settings(args.settings)
    concepts = [c for c in args.concepts.split(",") if c]
    classifier = load_classifier()
    started = time.perf_counter()

    models: list[tuple[str, str, object]] = []  # (erased concept, name, model)
    for k, concept in enumerate(concepts):
        models.append((concept, f"retrained without {concept}", load_world_model(without=concept)))
        if k == 0:
            if args.esd_iterations:
                models += [(concept, name, model) for name, model in
                           esd_checkpoints(concept_prompt(concept), [args.esd_iterations], args.esd_lr, 0)]
            models += [(concept, DESTROYED[0], damaged("reinit")), (concept, DESTROYED[1], damaged("zeros"))]
            models += [(concept, f"UNet + noise s={s}", damaged("noise", float(s))) for s in args.perturb.split(",") if s]

    base = load_world_model()
    results: dict[str, list] = {"tuning": [], "held-out": []}
    for split, seed in (("tuning", args.tuning_seed), ("held-out", args.held_out_seed)):
        configs = {c: UtilityConfig.for_world(c, n=args.generations, seed=seed, settings=settings) for c in concepts}
        base_scores = {c: measure_utility(base, configs[c], classifier=classifier) for c in concepts}
        for concept, name, model in models:
            result = utility_check(model, base_scores[concept], configs[concept], classifier=classifier)
            results[split].append((concept, name, result))
            print(f"{split} / {concept} / {name}: worst ratio {ratio_cell(result.ratio)} under "
                  f"{result.worst.setting.label} ({time.perf_counter() - started:.0f} s)", flush=True)

    def worst(split: str, names) -> list[float]:
        return [-math.inf if r.ratio is None else r.ratio for _, n, r in results[split] if n in names]

    good = {n for _, n, _ in results["tuning"] if n.startswith("retrained")}
    low_good, high_bad = min(worst("tuning", good)), max(worst("tuning", DESTROYED))
    threshold = math.floor((low_good + high_bad) / 2 / 0.05) * 0.05
    rows = []
    for split in ("tuning", "held-out"):
        for concept, name, result in results[split]:
            worst_setting = result.worst
            passes = result.ratio is not None and result.ratio >= threshold
            rows.append((split, concept, name, *(ratio_cell(s.ratio) for s in result.settings),
                         f"{worst_setting.checkpoint_mean.value:.3f} / {worst_setting.base_mean.value:.3f}",
                         ratio_cell(result.ratio), worst_setting.setting.label, "pass" if passes else "FAIL"))
    header = ("split", "erased", "model", *(f"ratio {s.label}" for s in settings), "kept acc. / base (worst)",
              "worst ratio", "worst setting", f"at min_ratio {threshold:.2f}")
    table = markdown_table(header, rows)
    rule = (f"tuning split (seeds {args.tuning_seed}..): lowest retrained worst ratio {low_good:.3f}, highest "
            f"destroyed {high_bad:.3f}; min_ratio = midpoint rounded down to 0.05 = {threshold:.2f}")
    print(table)
    print(rule)
    if not args.no_record:
        append_results(f"utility_check: shapes world, kept-shape accuracy against the original, {args.generations} "
                       f"generations per kept shape and setting, tuning seeds {args.tuning_seed}.., held-out seeds "
                       f"{args.held_out_seed}.., {args.threads} thread(s), {time.perf_counter() - started:.0f} s",
                       f"{table}\n\n{rule}")


if __name__ == "__main__":
    main()
