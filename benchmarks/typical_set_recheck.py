"""Re-check the memory score's calibration under the typical-set rule, and gate degenerate UNets.

Part A, no inversion: every probe of `calibrate_memory_signal.py` (benchmarks/calibration_raw.json:
14 models, tune and held-out splits, four presets, per-image NLL and PSNR) re-scored with the current
`memory_score` (the typical band |tau| <= k), against the score recorded under the old position:
how many set scores and verdicts move, and the seeds' tau range per image kind.

Part B: the held-out circle split probed, with the negative control, on the shipped world, the world
retrained without circles, and three models the probe must not read: the world's UNet with every
weight zero (eps = 0), a randomly initialised UNet of its config, and the world's UNet with Gaussian
noise of each tensor's own std added. Per model and preset: M, the control's M, the seeds' tau range
and the gate's verdict at the default thresholds.

    .venv/bin/python benchmarks/typical_set_recheck.py                         # ~10 min on 1 CPU core
    .venv/bin/python benchmarks/typical_set_recheck.py --images 2 --presets fast --no-record   # smoke
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearn_guard import probe
from unlearn_guard.config import DEFAULT_TYPICAL_SIGMAS, PRESETS
from unlearn_guard.errors import InsufficientDataError
from unlearn_guard.gate.decision import Thresholds, decide
from unlearn_guard.gate.finish import control_record
from unlearn_guard.probe_seeds import derive_seed
from unlearn_guard.results import interval_record
from unlearn_guard.signal import DEFAULT_MAX_MEMORY, memory_score
from unlearn_guard.world import load_world_model
from unlearn_guard.world.evaluate import probe_sets

from _results import append_results, markdown_table

RAW = Path(__file__).resolve().parent / "calibration_raw.json"
HELDOUT_SEED = 83_000  # calibrate_memory_signal.SPLIT_SEEDS["heldout"]


def rescore(raw: dict[str, Any]) -> tuple[str, dict[str, list[float]]]:
    """Part A: the recorded probes re-scored; the table and the tau range per image kind."""
    taus: dict[str, list[float]] = {}
    rows, moved, flipped = [], 0, 0
    for key, record in sorted(raw["records"].items()):
        concept, model, split, kind, preset = key.split("|")
        normal = np.asarray(record["normal_nll"])
        mu, sd = normal.mean(), normal.std(ddof=1)
        for part, label in (("erased", kind), ("reference", "reference")):
            taus.setdefault(label, []).extend((float(i["nll"]) - mu) / sd for i in record[part])
        old = record["memory"]
        nll = [i["nll"] for i in record["erased"]]
        psnr = [i["psnr"] for i in record["erased"]]
        try:
            new = memory_score(nll, psnr, [i["nll"] for i in record["reference"]],
                               [i["psnr"] for i in record["reference"]], normal, bootstrap_samples=1000,
                               seed=derive_seed(0, "memory_bootstrap", 0))  # the probe's own stream
            value, high = new.value, new.ci_high
        except InsufficientDataError:
            value, high = math.nan, math.nan
        if old is None:
            continue
        delta = abs(value - float(old["value"]))
        moved += delta > 1e-12
        verdict_old = float(old["ci_high"]) <= DEFAULT_MAX_MEMORY
        verdict_new = high <= DEFAULT_MAX_MEMORY
        flipped += verdict_old != verdict_new
        if delta > 1e-12 or verdict_old != verdict_new:
            rows.append((concept, model, split, kind, preset, f"{float(old['value']):.3f}", f"{value:.3f}",
                         "yes" if verdict_old != verdict_new else "no"))
    lines = [f"Part A: {len(raw['records'])} recorded probes re-scored with |tau| <= {DEFAULT_TYPICAL_SIGMAS:g}: "
             f"{moved} set score(s) moved, {flipped} verdict(s) at the default threshold flipped.", ""]
    if rows:
        lines.append(markdown_table(("concept", "model", "split", "images", "preset", "M before", "M now", "verdict flips"),
                                    rows))
        lines.append("")
    lines.append(markdown_table(("images", "seeds", "tau min", "tau max"),
                                [(k, len(v), f"{min(v):+.2f}", f"{max(v):+.2f}") for k, v in sorted(taus.items())]))
    return "\n".join(lines), taus


def degenerate_models(seed: int = 0) -> dict[str, Any]:
    """The shipped world, the world retrained without circles, and three broken copies."""
    world = load_world_model()
    zeros = copy.deepcopy(world)
    random_init = copy.deepcopy(world)
    perturbed = copy.deepcopy(world)
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    random_init.unet.load_state_dict(UNet2DConditionModel.from_config(world.unet.config).state_dict())
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in zeros.unet.parameters():
            parameter.zero_()
        for parameter in perturbed.unet.parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.add_(noise * parameter.std().nan_to_num(0.0))
    return {"original": world, "retrained (no circles)": load_world_model(without="circle"), "zeros": zeros,
            "random init": random_init, "perturbed": perturbed}


def gate_models(images: int, presets: list[str]) -> str:
    """Part B: each model probed with the control on held-out circles; its numbers and gate verdict."""
    sets = probe_sets("circle", images, seed=HELDOUT_SEED)
    rows = []
    for name, model in degenerate_models().items():
        for preset in presets:
            config = PRESETS[preset].replace(progress=False, bootstrap_samples=1000, seed=0)
            result = probe(model, sets.concept, sets.concept_prompts, reference=sets.reference,
                           reference_prompts=sets.reference_prompts, config=config)
            normal = result.normal_nll.numpy()
            mu, sd = normal.mean(), normal.std(ddof=1)
            tau = np.concatenate([(p.nll.numpy() - mu) / sd for p in (result.erased, result.reference)])
            entry = {"memory": interval_record(result.memory), "control_memory": control_record(result),
                     "notes": result.notes, "psnr_mean": result.erased.summary()["psnr_mean"]}
            decision = decide(entry, Thresholds())
            shown = "undefined" if result.memory is None else f"{result.memory.value:.3f} [{result.memory.ci_low:.3f}, {result.memory.ci_high:.3f}]"
            control = "-" if result.control_memory is None else f"{result.control_memory.value:.3f}"
            rows.append((name, preset, shown, control, f"{np.nanmin(tau):+.1f} .. {np.nanmax(tau):+.1f}",
                         f"{result.erased.summary()['psnr_mean']:.1f}", decision.verdict, decision.reasons[0][:140]))
            print(" | ".join(rows[-1]), flush=True)
    return markdown_table(("model", "preset", "memory M [95% CI]", "control M", "seed tau (E, R)", "E PSNR dB",
                           "verdict", "reason (start)"), rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8, help="held-out concept and reference images per set")
    parser.add_argument("--presets", default="mofc,track")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    part_a, _ = rescore(json.loads(RAW.read_text()))
    print(part_a, flush=True)
    part_b = gate_models(args.images, args.presets.split(","))
    print(part_b)
    body = (part_a + "\n\nPart B: held-out circles, |E| = |R| = " + str(args.images) + ", negative control "
            "4 images x 2 prompts, default thresholds (max memory " + f"{DEFAULT_MAX_MEMORY:g}):\n\n" + part_b)
    if not args.no_record:
        append_results(f"typical_set_recheck: shapes world, presets {args.presets}, {args.threads} thread(s), "
                       f"{time.perf_counter() - started:.0f} s", body)


if __name__ == "__main__":
    main()
