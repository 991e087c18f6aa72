"""Ablation of the memory loss on the *training pool* only: one ESD (+ anchor_path) run per call,
then a table of all runs.

This is where the settings of benchmarks/memory_aware_erasure.py were chosen, on circle's
training pool (seed 50_000 images, the monitor's own), never on its held-out images. Per run:
the memory score M on the pool (`track`, 8 + 8 images) every --every steps, and at the end the
accuracy of 16 generations from the concept's prompt and of 8 per kept shape.

    .venv/bin/python benchmarks/memory_loss_ablation.py --name esd --out benchmarks/.ablation
    .venv/bin/python benchmarks/memory_loss_ablation.py --name ap --weight 10 --lr 3e-3 --out benchmarks/.ablation
    .venv/bin/python benchmarks/memory_loss_ablation.py --table benchmarks/.ablation   # RESULTS.md section
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch

from _results import append_results, markdown_table


def run(args: argparse.Namespace) -> dict:
    from unlearn_guard import ProbeConfig
    from unlearn_guard.callbacks import MonitorConfig, ProbeMonitor
    from unlearn_guard.losses import AnchorPathConfig
    from unlearn_guard.trainers import ESDConfig, esd_lora_erase
    from unlearn_guard.world import concept_prompt, load_classifier, load_world_model
    from unlearn_guard.world.evaluate import accuracy_from_prompt, kept_accuracy, probe_sets

    model, classifier = load_world_model(), load_classifier()
    pool = probe_sets(args.concept, 8, seed=50_000)
    preset = ProbeConfig.from_preset("track", seed=0, progress=False, keep_seeds=True)
    monitor = ProbeMonitor(model, pool.concept, pool.concept_prompts, reference=pool.reference,
                           reference_prompts=pool.reference_prompts, name=args.concept,
                           config=MonitorConfig(every_n_steps=args.every, probe=preset, signal="memory", target=0.0))
    loss = {}
    if args.weight > 0:
        loss = dict(memory_loss=AnchorPathConfig(noise=args.noise, null_weight=args.null, keep_weight=args.keep,
                                                 timesteps=args.timesteps, random_paths=args.random_paths,
                                                 min_noise=args.min_noise, guidance=args.guidance),
                    memory_loss_weight=args.weight)
    config = ESDConfig(concept=concept_prompt(args.concept), iterations=args.iterations, lr=args.lr, seed=0,
                       method=args.method, negative_guidance=args.eta, **loss)
    started = time.time()
    esd_lora_erase(model, config, monitor=monitor, progress=False)
    seconds = time.time() - started - monitor.overhead_seconds
    return {"name": args.name, "args": {k: v for k, v in vars(args).items() if k not in ("out", "table")},
            "train_s": seconds, "acc": accuracy_from_prompt(model, classifier, args.concept, args.accuracy_images, 30_000),
            "kept": kept_accuracy(model, classifier, args.concept, max(args.accuracy_images // 2, 1), 40_000),
            "curve": [(r.step, r.memory, r.memory_low, r.memory_high) for r in monitor.history if r.ok]}


def table(folder: Path, record: bool = True, only: str | None = None) -> None:
    """Print the table of the runs in `folder` (or of the run `only`); append it to RESULTS.md when `record`."""
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json")) if only is None or p.stem == only]
    rows = []
    for r in runs:
        a = r["args"]
        loss = "-" if a["weight"] == 0 else (f"w {a['weight']:g}, null {a['null']:g}, keep {a['keep']:g}, "
                                             f"P {a['random_paths']}, t >= {a['min_noise']:g} T, g {a.get('guidance', 0):g}")
        step, memory, low, high = r["curve"][-1]
        rows.append((r["name"], a["iterations"], f"{a['lr']:g}", f"{a['eta']:g}", loss,
                     f"{memory:.3f} [{low:.3f}, {high:.3f}] at {step}", f"{r['acc']:.2f}", f"{r['kept']:.2f}",
                     f"{r['train_s']:.0f}"))
    header = ("run", "steps", "lr", "eta", "anchor_path loss", "M pool (track) [95%]", "concept acc",
              "kept acc", "train s")
    body = markdown_table(header, rows)
    print(body)
    if not record:
        return
    append_results(f"memory_loss_ablation: circle, esd-x LoRA, training pool only (seed 50_000, 8 + 8, track), "
                   f"{len(runs)} runs, 1 thread each, two or three at once", body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name(".ablation"))
    parser.add_argument("--table", type=Path, default=None, help="write the table of the runs in this folder")
    parser.add_argument("--no-record", action="store_true", help="--table: print only, no RESULTS.md row")
    parser.add_argument("--accuracy-images", type=int, default=16, help="prompt generations (kept: half per shape)")
    parser.add_argument("--concept", default="circle")
    parser.add_argument("--method", default="esd-x")
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eta", type=float, default=1.0, help="ESD negative guidance")
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--weight", type=float, default=0.0, help="anchor_path weight (0: ESD alone)")
    parser.add_argument("--noise", default="seeds")
    parser.add_argument("--null", type=float, default=1.0)
    parser.add_argument("--keep", type=float, default=1.0)
    parser.add_argument("--timesteps", type=int, default=2)
    parser.add_argument("--random-paths", type=int, default=0)
    parser.add_argument("--min-noise", type=float, default=0.0)
    parser.add_argument("--guidance", type=float, default=0.0, help="anchor_path guidance g")
    args = parser.parse_args()
    if args.table is not None:
        table(args.table, record=not args.no_record)
        return
    if not args.name:
        parser.error("--name is required for a run")
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    table(args.out, record=False, only=args.name)


if __name__ == "__main__":
    main()
