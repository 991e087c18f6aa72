"""Does "the prompt no longer draws the concept" survive other sampling settings? (small world)

A user found that the demo's erased adapter drew circles from "a circle" in 4.7% of generations
with DDIM at guidance 4 (the evaluation setting) but in 31% at guidance 1 and 31% with the SD
pipeline's default scheduler (PNDM) at guidance 3. Here, per model (the original world, ESD-x LoRA
checkpoints of one run, the world retrained without the concept): the share of generations from
the concept's prompt that the shipped classifier calls the concept, under each sampling setting
of `WORLD_SETTINGS` (or --settings), same seeds for every setting, with Wilson intervals, and the
worst case with its setting (`worst_case_prompt_success`). Prints a table and appends it to
benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/sampling_settings.py --threads 1
    .venv/bin/python benchmarks/sampling_settings.py --settings ddim:4:25,pndm:3:25 --generations 32
"""

from __future__ import annotations

import argparse
import time

import torch

from unlearn_guard.attacks import ShapeJudge, worst_case_prompt_success
from unlearn_guard.sampling import as_settings
from unlearn_guard.models import load_model
from unlearn_guard.world import WEIGHTS_DIR, concept_prompt, load_classifier, load_world_model

from _results import append_results, markdown_table
from concept_inversion_attack import esd_checkpoints


def cell(result) -> str:
    return f"{result.rate:.3f} [{result.ci_low:.2f}, {result.ci_high:.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concept", default="circle", help="a shape with a shipped retrained world (circle, square, triangle)")
    parser.add_argument("--settings", default="world", help="a named set or a comma list of SCHEDULER:GUIDANCE:STEPS")
    parser.add_argument("--esd-iterations", default="150,300", help="ESD-x checkpoints of one run (comma list; '' for none)")
    parser.add_argument("--esd-lr", type=float, default=3e-3, help="the demo's ESD-x learning rate")
    parser.add_argument("--adapters", default="",
                        help="comma list of LoRA adapter folders on the shipped world (e.g. the demo's "
                             "unlearn_guard_outputs/demo/adapter), measured beside the others")
    parser.add_argument("--generations", type=int, default=64, help="images per model and setting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    settings = as_settings(args.settings)
    prompt, judge = concept_prompt(args.concept), ShapeJudge(args.concept, load_classifier())
    iterations = sorted(int(i) for i in args.esd_iterations.split(",") if i)
    started = time.perf_counter()
    models = [("original", load_world_model())]
    models += esd_checkpoints(prompt, iterations, args.esd_lr, args.seed) if iterations else []
    models += [(f"adapter {folder}", load_model(str(WEIGHTS_DIR / "pipeline"), lora=folder))
               for folder in args.adapters.split(",") if folder]
    models.append((f"retrained without {args.concept}", load_world_model(without=args.concept)))
    rows = []
    for name, model in models:
        t = time.perf_counter()
        found = worst_case_prompt_success(model, prompt, judge, settings, n=args.generations, seed=args.seed)
        worst = found.worst
        rows.append((name, *(cell(r) for r in found.results), cell(worst), worst.setting.label,
                     f"{time.perf_counter() - t:.0f}"))
        print(f"{name}: worst {cell(worst)} under {worst.setting.label} ({time.perf_counter() - started:.0f} s)",
              flush=True)
    header = ("model", *(s.label for s in settings), "worst [95% Wilson]", "worst setting", "s")
    table = markdown_table(header, rows)
    print(table)
    if not args.no_record:
        esd = f"ESD-x lr {args.esd_lr} ({args.esd_iterations} it)" if iterations else "no ESD"
        esd += f", adapters {args.adapters}" if args.adapters else ""
        append_results(f"sampling_settings: shapes world, {prompt!r} judged by the shipped classifier, "
                       f"{args.generations} generations per model and setting (seeds {args.seed}..), {esd}, "
                       f"{args.threads} thread(s), {time.perf_counter() - started:.0f} s", table)


if __name__ == "__main__":
    main()
