"""Calibrate the memory signal on ground truth: the world retrained without a concept never knew it.

For each concept (default circle and square) the models are
  original           the shipped world (knows the concept)
  retrained          `train-world --exclude <concept>`: never saw it (the ground truth of unlearning)
  esd-x-75/150/300   ESD-x LoRA checkpoints of one run (lr 1e-3, rank 4)
  esd-u-300          ESD-u LoRA
  memory-seed-300    ESD-x with half the trajectories started from the original's seeds
and for each model and preset the probe runs on two disjoint image splits, `tune` and `heldout`
(concept renders E + renders of the other shapes R, never used in training any ESD model), plus
never-learnable sets on the original and retrained models: stars and uniform noise (held-out only).
Per image it records NLL, PSNR and divergence; per set d_N (mofc and w1) and the memory score,
each with a 95% bootstrap interval; per model the classifier's accuracy from the concept prompt
and on the kept concepts.

Analysis (printed, appended to RESULTS.md, raw numbers to --raw):
  1. image-level AUROC between the original's and the retrained model's concept images, per
     candidate per-image score (seed NLL, likelihood position u, PSNR, memory m), per split;
  2. set-level values with intervals per model; whether original and retrained intervals overlap;
  3. the gate threshold on the memory score, tuned on `tune` only (midway between the highest
     retrained and the lowest original score), and the verdicts it gives on `heldout` with the
     conservative end of each interval (pass = the interval's upper end is below the threshold);
  4. each cheap preset's Spearman rank correlation with `mofc` over all (concept, model) points.

    .venv/bin/python benchmarks/calibrate_memory_signal.py                    # ~1 h on 2 CPU cores
    .venv/bin/python benchmarks/calibrate_memory_signal.py --concepts circle --images 3 --presets fast \\
        --esd-iterations 2 --anchor-preset fast --no-record                     # smoke
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from scipy.stats import spearmanr

from unlearn_guard import ProbeConfig, load_model, probe
from unlearn_guard.config import PRESETS, InversionConfig, RegularizationConfig
from unlearn_guard.signal.memory_score import image_memory
from unlearn_guard.trainers import ESDConfig, esd_lora_erase, save_esd_adapter
from unlearn_guard.world import WEIGHTS_DIR, concept_prompt, load_classifier, load_world_model
from unlearn_guard.world.evaluate import accuracy_from_prompt, kept_accuracy, out_of_world_images, probe_sets

from _results import append_results, cached, markdown_table

# This script measures the inversion and the memory score, not the negative control: the control is
# off (control_images=0), which also keeps its images out of the timings, and so is its warning.
warnings.filterwarnings("ignore", message="the negative control is off")

SPLIT_SEEDS = {"tune": 71_000, "heldout": 83_000}  # far from the training draw (seed 0) and each other
MEMORY_POOL_SEED = 97_000
# Cheap in-training candidates beside the shipped presets: plain DDIM inversion with fewer steps.
# ddim20 is the `track` preset's inversion (the monitor's default since this calibration; same
# numbers, the cache key keeps the label it was measured under).
CANDIDATES = {
    "ddim10": ProbeConfig(preset="custom", inversion=InversionConfig(
        num_steps=10, renoise_steps=0, early_window=(0, 0), late_window=(0, 0),
        regularization=RegularizationConfig(enabled=False))),
    "ddim20": ProbeConfig(preset="custom", inversion=InversionConfig(
        num_steps=20, renoise_steps=0, early_window=(0, 0), late_window=(0, 0),
        regularization=RegularizationConfig(enabled=False))),
    "fast20": ProbeConfig(preset="custom", inversion=InversionConfig(
        num_steps=20, renoise_steps=1, early_window=(0, 2), late_window=(0, 2))),
}


def preset_config(name: str) -> ProbeConfig:
    base = PRESETS[name] if name in PRESETS else CANDIDATES[name]
    return base.replace(progress=False, bootstrap_samples=1000, seed=0, control_images=0)


# ----------------------------------------------------------------------------- models
def esd_models(concept: str, iterations: list[int], cache: Path, log: Callable[[str], None],
               pool: int = 16, pool_preset: str = "mofc") -> dict[str, Path]:
    """Train (or reuse) the ESD adapters; returns {model name: adapter folder}. The memory-seed run
    starts from the seeds that `pool_preset` finds for the pool."""
    prompt = concept_prompt(concept)
    folders: dict[str, Path] = {}
    longest = max(iterations)
    runs = [("esd-x", ESDConfig(concept=prompt, method="esd-x", iterations=longest, lr=1e-3, seed=0), iterations, None),
            ("esd-u", ESDConfig(concept=prompt, method="esd-u", iterations=longest, lr=1e-3, seed=0), [longest], None),
            ("memory-seed", ESDConfig(concept=prompt, method="esd-x", iterations=longest, lr=1e-3, seed=0,
                                      memory_weight=1.0, memory_fraction=0.5), [longest], "seeds")]
    for name, config, checkpoints, needs_seeds in runs:
        # the memory-seed adapter depends on the pool's preset: another preset, another folder
        suffix = f"-{pool_preset}" if needs_seeds and pool_preset != "mofc" else ""
        wanted = {step: cache / "adapters" / concept / f"{name}-{step}{suffix}" for step in checkpoints}
        folders.update({f"{name}-{step}": folder for step, folder in wanted.items()})
        if all((folder / "pytorch_lora_weights.safetensors").is_file() for folder in wanted.values()):
            continue
        model = load_world_model()
        seeds = None
        if needs_seeds:  # where the concept lives in the original: seeds of a pool never probed later
            images, prompts, _, _ = probe_sets(concept, pool, seed=MEMORY_POOL_SEED)
            seeds = probe(load_world_model(), images, prompts, config=preset_config(pool_preset),
                          keep_seeds=True).erased.seeds

        def save(step: int, _loss: float, model=model, wanted=wanted, config=config) -> None:
            if step + 1 in wanted:
                save_esd_adapter(model, wanted[step + 1], config=config)

        started = time.perf_counter()
        esd_lora_erase(model, config, memory_seeds=seeds, on_step=save, progress=False)
        log(f"{concept}: trained {name} ({longest} it) in {time.perf_counter() - started:.0f} s")
    return folders


def model_loaders(concept: str, adapters: dict[str, Path]) -> dict[str, Callable[[], Any]]:
    loaders: dict[str, Callable[[], Any]] = {
        "original": load_world_model,
        "retrained": lambda: load_world_model(WEIGHTS_DIR / f"without-{concept}"),
    }
    for name, folder in adapters.items():
        loaders[name] = lambda folder=folder: load_model(WEIGHTS_DIR / "pipeline", lora=folder)
    return loaders


# ----------------------------------------------------------------------------- probing (cached)
def image_sets(concept: str, split: str, count: int) -> dict[str, tuple]:
    seed = SPLIT_SEEDS[split]
    sets = probe_sets(concept, count, seed=seed)
    out = {"concept": (sets.concept, sets.concept_prompts, sets.reference, sets.reference_prompts)}
    if split == "heldout":
        for kind in ("star", "noise"):
            images, prompts = out_of_world_images(kind, count, seed=seed + 500)
            out[kind] = (images, prompts, sets.reference, sets.reference_prompts)
    return out


def run_probe(model, images: tuple, config: ProbeConfig) -> dict[str, Any]:
    erased, erased_prompts, reference, reference_prompts = images
    result = probe(model, erased, erased_prompts, reference=reference, reference_prompts=reference_prompts, config=config)
    data = result.to_dict()
    return {"erased": data["erased"]["images"], "reference": data["reference"]["images"],
            "normal_nll": [float(v) for v in result.normal_nll], "memory": data["memory"],
            "memory_distance": data["memory_distance"], "notes": result.notes,
            "d_n_w1": _d_n_w1(result), "seconds": data["erased"]["summary"]["seconds"] + data["reference"]["summary"]["seconds"],
            "evaluations_per_image": data["erased"]["summary"]["unet_evaluations"] // len(data["erased"]["images"])}


def _d_n_w1(result) -> dict[str, Any] | None:
    from unlearn_guard.stats.functional import memory_distance

    e, r = result.erased.nll, result.reference.nll
    e, r = e[~torch.isnan(e)], r[~torch.isnan(r)]
    if len(e) < 2 or len(r) < 2:
        return None
    md = memory_distance(e, r, result.normal_nll, kind="w1", bootstrap_samples=1000, seed=1)
    return md.to_dict()


# ----------------------------------------------------------------------------- analysis
RESULTS_DIR = Path(__file__).resolve().parent


def plot_memory(records: dict, concepts: list[str], model_names: dict[str, list[str]], threshold: float,
                path: Path, anchor: str = "mofc") -> Path:
    """One panel per concept: M with its 95% interval per model (mofc), tune and held-out side by
    side, stars and noise on the original and retrained models, and the tuned threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = path.resolve()
    figure, axes = plt.subplots(1, len(concepts), figsize=(6 * len(concepts), 4), squeeze=False)
    for axis, concept in zip(axes[0], concepts):
        labels = []
        rows = [(name, "concept", split) for name in model_names[concept] for split in SPLIT_SEEDS]
        rows += [(name, kind, "heldout") for name in ("original", "retrained") for kind in ("star", "noise")]
        for x, (name, kind, split) in enumerate(rows):
            record = records.get((concept, name, split, kind, "mofc" if kind == "concept" else anchor))
            if record is None or record["memory"] is None:
                continue
            value, low, high = interval(record["memory"])
            colour = {"tune": "tab:gray", "heldout": "tab:blue"}[split] if kind == "concept" else "tab:green"
            axis.errorbar([x], [value], yerr=[[value - low], [high - value]], fmt="o", color=colour, capsize=3)
            labels.append((x, name if kind == "concept" else f"{name}/{kind}", split))
        axis.axhline(threshold, color="tab:red", linestyle="--", label=f"threshold {threshold:.3f}")
        axis.set_xticks([x for x, _, _ in labels], [f"{n} ({s[0]})" for _, n, s in labels], rotation=60, ha="right",
                        fontsize=7)
        axis.set_ylim(-0.05, 1.05)
        axis.set_ylabel("memory score M (mofc)")
        axis.set_title(f"{concept}: gray tune, blue held-out, green never-learnable")
        axis.legend(loc="upper right", fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
def per_image(record: dict[str, Any]) -> dict[str, np.ndarray]:
    """Candidate per-image scores of E (higher = remembers) from one probe record."""
    nll = np.array([float(i["nll"]) for i in record["erased"]])
    psnr = np.array([float(i["psnr"]) for i in record["erased"]])
    ref_nll = np.array([float(i["nll"]) for i in record["reference"]])
    ref_psnr = np.array([float(i["psnr"]) for i in record["reference"]])
    keep = np.isfinite(ref_nll) & ~np.isnan(ref_psnr)
    mu_r, mu_n = ref_nll[keep].mean(), float(np.mean(record["normal_nll"]))
    sd_n = float(np.std(record["normal_nll"], ddof=1))
    p_r = float(np.median(ref_psnr[keep]))
    position = (mu_n - nll) / (mu_n - mu_r)
    margin = record["memory"]["psnr_margin_db"] if record["memory"] else 5.0
    return {
        "-NLL": np.nan_to_num(-nll, nan=-1e9),
        "u (likelihood position)": np.nan_to_num(position, nan=-1e9),
        "PSNR": np.nan_to_num(psnr, nan=-1e9),
        "m (memory)": image_memory(nll, psnr, mu_r, mu_n, p_r - margin, sd_n),
    }


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score of a random positive > a random negative), ties counting 1/2 (Mann-Whitney)."""
    greater = (positive[:, None] > negative[None, :]).mean()
    ties = (positive[:, None] == negative[None, :]).mean()
    return float(greater + 0.5 * ties)


def interval(entry: dict[str, Any] | None, key: str = "value") -> tuple[float, float, float]:
    if entry is None:
        return math.nan, math.nan, math.nan
    return float(entry[key]), float(entry["ci_low"]), float(entry["ci_high"])


def fmt(triple: tuple[float, float, float], digits: int = 3) -> str:
    value, low, high = triple
    return "-" if math.isnan(value) else f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", default="circle,square")
    parser.add_argument("--images", type=int, default=12, help="images per set (E and R) per split")
    parser.add_argument("--presets", default="mofc,fast,ddim,ddim10,ddim20,fast20")
    parser.add_argument("--esd-iterations", default="75,150,300", help="ESD-x checkpoints; the last is ESD-u's length")
    parser.add_argument("--accuracy-images", type=int, default=32)
    parser.add_argument("--memory-pool", type=int, default=16, help="concept images whose seeds the memory-seed run uses")
    parser.add_argument("--anchor-preset", default="mofc",
                        help="preset of what is probed with one preset only: the stars and noise sets, and the memory-seed "
                             "run's pool (mofc, the calibrated one; smoke runs pass a cheap one)")
    parser.add_argument("--models", default=None, help="comma-separated subset of models to probe (default: all); "
                        "the analysis needs original and retrained")
    parser.add_argument("--cache", default="benchmarks/.calibration_cache")
    parser.add_argument("--raw", default="benchmarks/calibration_raw.json", help="per-image numbers of every probe")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--plot", default=str(RESULTS_DIR / "plots" / "calibrate_memory_signal.png"),
                        help="figure of M per model (mofc) with the threshold; '' for none")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    cache = Path(args.cache)
    concepts = [c.strip() for c in args.concepts.split(",") if c.strip()]
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    iterations = sorted(int(v) for v in args.esd_iterations.split(","))
    log = lambda text: print(f"[{time.perf_counter() - started:6.0f} s] {text}", flush=True)  # noqa: E731
    classifier = load_classifier()

    records: dict[tuple, dict[str, Any]] = {}
    accuracy: dict[tuple[str, str], tuple[float, float]] = {}
    model_names: dict[str, list[str]] = {}
    for concept in concepts:
        adapters = esd_models(concept, iterations, cache, log, args.memory_pool, args.anchor_preset)
        loaders = model_loaders(concept, adapters)
        if args.models:
            wanted = {m.strip() for m in args.models.split(",")}
            loaders = {name: load for name, load in loaders.items() if name in wanted}
        model_names[concept] = list(loaders)
        for name, load in loaders.items():
            model = load()
            key = {"concept": concept, "model": name, "what": "accuracy", "n": args.accuracy_images}
            acc = cached(cache / "probes", key, lambda: {
                "concept": accuracy_from_prompt(model, classifier, concept, args.accuracy_images, 30_000),
                "kept": kept_accuracy(model, classifier, concept, args.accuracy_images // 2, 40_000)})
            accuracy[(concept, name)] = (acc["concept"], acc["kept"])
            for split in SPLIT_SEEDS:
                for set_name, images in image_sets(concept, split, args.images).items():
                    if set_name != "concept" and name not in ("original", "retrained"):
                        continue
                    for preset in presets if set_name == "concept" else [args.anchor_preset]:
                        config = preset_config(preset)
                        key = {"concept": concept, "model": name, "split": split, "set": set_name, "preset": preset,
                               "images": args.images, "config": config.to_dict()}
                        records[(concept, name, split, set_name, preset)] = cached(
                            cache / "probes", key, lambda: run_probe(model, images, config))
            log(f"{concept}/{name}: probed")

    if not all(("original" in names and "retrained" in names) for names in model_names.values()):
        log("probed; the analysis needs the original and the retrained model of every concept (see --models)")
        return
    # 1. image-level AUROC, original vs retrained concept images
    auroc_rows = []
    for preset in presets:
        for split in SPLIT_SEEDS:
            scores: dict[str, list[float]] = {}
            for concept in concepts:
                knows = per_image(records[(concept, "original", split, "concept", preset)])
                never = per_image(records[(concept, "retrained", split, "concept", preset)])
                for score in knows:
                    scores.setdefault(score, []).append(auroc(knows[score], never[score]))
            auroc_rows.append((preset, split, *(f"{np.mean(v):.3f}" + (f" ({', '.join(f'{x:.2f}' for x in v)})"
                                                                       if len(v) > 1 else "") for v in scores.values())))
    auroc_header = ("preset", "split", *[f"AUROC {s}" for s in per_image(next(iter(records.values())))])

    # 2-3. set-level values; the threshold tuned on `tune`; verdicts on `heldout`
    def memory(concept, model, split, preset, set_name="concept"):
        return interval(records[(concept, model, split, set_name, preset)]["memory"])

    threshold = None
    if "mofc" in presets:
        top_retrained = max(memory(c, "retrained", "tune", "mofc")[0] for c in concepts)
        low_original = min(memory(c, "original", "tune", "mofc")[0] for c in concepts)
        threshold = (top_retrained + low_original) / 2
    set_rows = []
    for concept in concepts:
        for name in model_names[concept]:
            for split in SPLIT_SEEDS:
                record = records.get((concept, name, split, "concept", "mofc"))
                if record is None:
                    continue
                m = interval(record["memory"])
                verdict = "-" if threshold is None else ("does not remember" if m[2] <= threshold else "remembers")
                e_psnr = np.nanmean([float(i["psnr"]) for i in record["erased"]])
                set_rows.append((concept, name, split, f"{accuracy[(concept, name)][0]:.2f}",
                                 f"{accuracy[(concept, name)][1]:.2f}", fmt(m), verdict,
                                 fmt(interval(record["memory_distance"])), fmt(interval(record["d_n_w1"])),
                                 f"{e_psnr:.1f}", sum(i["diverged"] is not None for i in record["erased"])))
        for name in ("original", "retrained"):
            for kind in ("star", "noise"):
                record = records.get((concept, name, "heldout", kind, args.anchor_preset))
                if record is None:
                    continue
                m = interval(record["memory"])
                verdict = "-" if threshold is None else ("does not remember" if m[2] <= threshold else "remembers")
                e_psnr = np.nanmean([float(i["psnr"]) for i in record["erased"]])
                anchor = "" if args.anchor_preset == "mofc" else f" ({args.anchor_preset})"
                set_rows.append((concept, f"{name} / {kind} images{anchor}", "heldout", "-", "-", fmt(m), verdict,
                                 fmt(interval(record["memory_distance"])), fmt(interval(record["d_n_w1"])),
                                 f"{e_psnr:.1f}", sum(i["diverged"] is not None for i in record["erased"])))
    set_header = ("concept", "model", "split", "concept acc", "kept acc", "memory M (mofc) [95% CI]",
                  "verdict (upper end <= threshold, as the gate)", "d_N mofc [95% CI]", "d_N w1 [95% CI]", "E PSNR dB", "diverged")
    overlap_rows = []
    for concept in concepts:
        for split in SPLIT_SEEDS:
            for preset in presets:
                o, r = memory(concept, "original", split, preset), memory(concept, "retrained", split, preset)
                dn_o = interval(records[(concept, "original", split, "concept", preset)]["memory_distance"])
                dn_r = interval(records[(concept, "retrained", split, "concept", preset)]["memory_distance"])
                overlap_rows.append((concept, split, preset, fmt(o), fmt(r), "yes" if r[2] >= o[1] else "no",
                                     fmt(dn_o), fmt(dn_r), "yes" if max(dn_o[1], dn_r[1]) <= min(dn_o[2], dn_r[2]) else "no"))
    overlap_header = ("concept", "split", "preset", "M original", "M retrained", "M intervals overlap",
                      "d_N original", "d_N retrained", "d_N intervals overlap")

    # 4. rank agreement of each preset with mofc over all (concept, model) points, per split
    rank_rows = []
    if "mofc" in presets:
        points = [(c, n) for c in concepts for n in model_names[c]]
        for preset in presets:
            for split in SPLIT_SEEDS:
                ours = [memory(c, n, split, preset)[0] for c, n in points]
                ref = [memory(c, n, split, "mofc")[0] for c, n in points]
                rho_m = spearmanr(ours, ref).statistic
                dn = [interval(records[(c, n, split, "concept", preset)]["memory_distance"])[0] for c, n in points]
                dn_ref = [interval(records[(c, n, split, "concept", "mofc")]["memory_distance"])[0] for c, n in points]
                rho_d = spearmanr(dn, dn_ref).statistic
                seconds = np.mean([records[(c, n, split, "concept", preset)]["seconds"] for c, n in points]) / (2 * args.images)
                evaluations = records[(concepts[0], "original", split, "concept", preset)]["evaluations_per_image"]
                rank_rows.append((preset, split, len(points), f"{rho_m:.3f}", f"{rho_d:.3f}", f"{seconds:.3f}", evaluations))
    rank_header = ("preset", "split", "(concept, model) points", "Spearman M vs mofc", "Spearman d_N vs mofc",
                   "s/image (CPU)", "UNet evals/image")

    body = "\n\n".join([
        f"Threshold on the memory score tuned on the `tune` split (midway between the highest retrained and the lowest "
        f"original M, mofc): {threshold if threshold is None else f'{threshold:.3f}'}. Verdicts below use the held-out "
        "split too: a model 'does not remember' when the upper end of M's 95% interval is at most the threshold (the gate's rule).",
        markdown_table(set_header, set_rows),
        "Image-level AUROC, original (knows) vs retrained (never saw) concept images; mean over concepts (per concept):",
        markdown_table(auroc_header, auroc_rows),
        "Set-level intervals, original vs retrained:",
        markdown_table(overlap_header, overlap_rows),
        "Rank agreement with mofc (all models of all concepts; ddim20 is the `track` preset's inversion):",
        markdown_table(rank_header, rank_rows),
    ])
    if args.plot and threshold is not None and not args.no_record:
        plot = plot_memory(records, concepts, model_names, threshold, Path(args.plot), args.anchor_preset)
        body += f"\n\n![memory score per model, mofc, both splits, with the threshold]({os.path.relpath(plot, RESULTS_DIR)})"
    print(body)
    raw = {f"{c}|{n}|{s}|{k}|{p}": v for (c, n, s, k, p), v in records.items()}
    Path(args.raw).parent.mkdir(parents=True, exist_ok=True)
    Path(args.raw).write_text(json.dumps({"threshold": threshold, "accuracy": {f"{c}|{n}": v for (c, n), v in accuracy.items()},
                                          "records": raw}, indent=1))
    log(f"raw numbers in {args.raw}")
    if not args.no_record:
        append_results(f"calibrate_memory_signal: shapes world, concepts {', '.join(concepts)}, |E|=|R|={args.images} "
                       f"per split, ESD-x checkpoints {iterations}, {time.perf_counter() - started:.0f} s", body)


if __name__ == "__main__":
    main()
