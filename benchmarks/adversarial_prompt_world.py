"""UnlearnDiffAtk adversarial prompts (SPEC 9) in the small world, measured per concept and model:
does ASR keep a model retrained without the concept apart from ESD checkpoints, and where should
the gate's `max_asr` sit?

Per concept (circle, square, triangle: each has a shipped retrained world) and model (the original world, the world
retrained without the concept, ESD-x and ESD-u LoRA checkpoints of the shipped world, lr 1e-3, and the
memory-aware checkpoint of `memory_aware_erasure.py`: ESD-x + anchor_path memory loss, its last
configuration, MEMORY_AWARE_FLAGS; `--no-memory-aware` leaves it out):

- Pre-ASR and ASR of the attack (preset "world", judged by `ShapeJudge(shape)`, targets made by
  the original world from each prompt and seed) on a TUNING and a HELD-OUT split of prompts (the
  concept's caption wordings, shuffled once and cut in two: no wording and no seed in both);
- a null attack: each prompt not broken unattacked is generated again with `--null-draws` random
  token prefixes (k tokens drawn uniformly from the vocabulary, as the attack's start; no
  gradient step) and judged each time: how much of the ASR the judge's false positives alone give
  when it is asked that many times;
- the plain prompt's accuracy ("a circle", `--prompt-images` seeds): the judge's per-image rate;
- the memory score M (`probe`, preset `--probe-preset` on 8+8 images of `probe_sets`);
- Concept Inversion success (short config; `--ci-steps 0` skips it);
- kept-shape accuracy (`kept_accuracy`) and its ratio to the original world's.

Then, on the TUNING split, the threshold on ASR (point value, and the Wilson upper end) that best
separates the retrained worlds (should pass: ASR <= threshold) from the ESD checkpoints (should
fail), and its accuracy on the HELD-OUT split; the memory-aware checkpoints are read against that
threshold, not used to set it. ESD adapters and per-model measurements are cached
under `--cache` (ignored by git), so a rerun only redoes what changed. Prints tables, appends them
to benchmarks/RESULTS.md and draws benchmarks/plots/adversarial_prompt_world.png.

    .venv/bin/python benchmarks/adversarial_prompt_world.py --threads 1
    .venv/bin/python benchmarks/adversarial_prompt_world.py --concepts circle --prompts 2 --timesteps 50 --steps 1 \\
        --esd-iterations 1 --null-draws 1 --probe-images 2 --prompt-images 2 --accuracy-images 1 --ci-steps 0 \\
        --cache cache --plot plot.png --no-record                                   # smoke (seconds)
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from unlearn_guard.attacks import AdversarialPromptConfig, ShapeJudge, adversarial_prompt_attack, prompt_success
from unlearn_guard.attacks.adversarial_prompt import _generate
from unlearn_guard.attacks.judges import judge_images
from unlearn_guard.attacks.prompt_tokens import adversarial_text
from unlearn_guard.stats.proportion import wilson_interval
from unlearn_guard.world import WEIGHTS_DIR, concept_prompt, load_classifier, load_world_model, probe_sets
from unlearn_guard.world.shapes import BACKGROUNDS, COLOURS, caption_variant, Scene

from _results import append_results, cached, markdown_table

HERE = Path(__file__).resolve().parent
SPLIT_SEEDS = {"tune": 0, "heldout": 10_000}  # prompt i of a split uses seed SPLIT_SEEDS[split] + i
PROBE_SEED = 83_000
PLAIN_SEED = 20_000
KEPT_SEED = 30_000
CI_SEED = 50_000

warnings.filterwarnings("ignore", message="the negative control is off")
warnings.filterwarnings("ignore", message="init_token")


# ----------------------------------------------------------------------------- prompts
def wordings(shape: str) -> list[str]:
    """Every caption wording of `shape` (`caption_variant` 0-3 over colours and backgrounds), once each."""
    texts = []
    for colour in COLOURS:
        for background in BACKGROUNDS:
            scene = Scene(shape, colour, background, 16.0, 16.0, 8.0)
            texts += [caption_variant(scene, v) for v in range(4)]
    return sorted(set(texts))  # 1 + 6 + 3 + 18 = 28


def split_prompts(shape: str, count: int) -> dict[str, tuple[list[str], list[int]]]:
    """{split: (prompts, seeds)}: the wordings shuffled once (fixed seed) and cut in two halves, so no
    wording is in both; `count` prompts per split (a half is cycled if count exceeds it); seeds
    disjoint (tune 0.., heldout 10000..)."""
    texts = wordings(shape)
    random.Random(1234).shuffle(texts)
    half = len(texts) // 2
    halves = {"tune": texts[:half], "heldout": texts[half:]}
    return {split: ([words[i % len(words)] for i in range(count)], [SPLIT_SEEDS[split] + i for i in range(count)])
            for split, words in halves.items()}


# ----------------------------------------------------------------------------- models (cached adapters)
def esd_adapters(shape: str, methods: dict[str, list[int]], cache: Path, log: Callable[[str], None]) -> dict[str, Path]:
    """Train (or reuse) one ESD LoRA run per method (lr 1e-3, seed 0) on the shipped world; the
    adapter saved at each listed iteration. Returns {model name: adapter folder}."""
    from unlearn_guard.trainers import ESDConfig, esd_lora_erase, save_esd_adapter

    folders: dict[str, Path] = {}
    for method, checkpoints in methods.items():
        if not checkpoints:
            continue
        config = ESDConfig(concept=concept_prompt(shape), method=method, iterations=max(checkpoints), lr=1e-3, seed=0)
        wanted = {step: cache / "adapters" / shape / f"{method}-{step}" for step in checkpoints}
        folders.update({f"ESD-{method[4:]} {step} it": folder for step, folder in wanted.items()})
        if all((folder / "pytorch_lora_weights.safetensors").is_file() for folder in wanted.values()):
            continue
        model = load_world_model()

        def save(step: int, _loss: float, model=model, wanted=wanted, config=config) -> None:
            if step + 1 in wanted:
                save_esd_adapter(model, wanted[step + 1], config=config)

        started = time.perf_counter()
        esd_lora_erase(model, config, on_step=save, progress=False)
        log(f"{shape}: trained {method} ({max(checkpoints)} it) in {time.perf_counter() - started:.0f} s")
    return folders


# memory_aware_erasure.py's last configuration (RESULTS.md: anchor_path keep 3, guidance 0.5, monitor
# weight 5..10, decisions on a watch set, prompt check), trained to N = 300 at lr 3e-3
MEMORY_AWARE_FLAGS = ("--iterations", "300", "--keep-weight", "3", "--guidance", "0.5", "--regularization-min", "5")
MEMORY_AWARE_NAME = "ESD-x + memory loss"


def memory_aware_adapter(shape: str, flags: list[str], cache: Path, classifier,
                         log: Callable[[str], None]) -> dict[str, Path]:
    """Train (or reuse) the memory-aware checkpoint of `memory_aware_erasure.py` (its `train`, with
    its `flags` and its own early-stop target) and save the LoRA at N. Returns {name: folder}."""
    from unlearn_guard.trainers import save_esd_adapter

    digest = hashlib.sha256(" ".join(flags).encode()).hexdigest()[:12]
    folder = cache / "adapters" / shape / f"memory-aware-{digest}"
    if not (folder / "pytorch_lora_weights.safetensors").is_file():
        import memory_aware_erasure as mae

        args = mae.parse_args(["--concepts", shape, "--threads", str(torch.get_num_threads()), *flags])
        target, source = mae.early_stop_target(shape, args)
        started = time.perf_counter()
        model, result, monitor, _seconds, _ = mae.train(shape, args, memory=True, target=target, classifier=classifier)
        save_esd_adapter(model, folder)
        stop = "never" if monitor.stop_step is None else f"at step {monitor.stop_step}"
        log(f"{shape}: trained ESD-x + memory loss ({len(result.losses)} it, target M <= {target:.3f}, {source}; "
            f"early stop would have fired {stop}) in {time.perf_counter() - started:.0f} s")
    return {MEMORY_AWARE_NAME: folder}


def model_loaders(shape: str, adapters: dict[str, Path]) -> dict[str, Callable[[], Any]]:
    from unlearn_guard.models import load_model

    loaders: dict[str, Callable[[], Any]] = {"retrained": lambda: load_world_model(without=shape)}
    for name, folder in adapters.items():
        loaders[name] = lambda folder=folder: load_model(str(WEIGHTS_DIR / "pipeline"), lora=folder)
    loaders["original"] = load_world_model
    return loaders


# ----------------------------------------------------------------------------- measurements
@torch.no_grad()
def null_attack(model, prompts: list[str], seeds: list[int], skip: list[bool], judge, config: AdversarialPromptConfig,
                draws: int) -> list[int]:
    """For each prompt: how many of `draws` random k-token prefixes (uniform over the vocabulary, with the
    prompt's seed) give an image the judge calls the concept; -1 where the prompt was skipped (already
    shown unattacked, so the attack never ran)."""
    vocabulary = model.text_encoder.get_input_embeddings().weight.shape[0]
    hits = []
    for index, (prompt, seed) in enumerate(zip(prompts, seeds)):
        if skip[index]:
            hits.append(-1)
            continue
        generator = torch.Generator().manual_seed(7_000_003 + seed)
        texts = [adversarial_text(model.tokenizer, prompt,
                                  torch.randint(0, vocabulary, (config.num_tokens,), generator=generator).tolist(),
                                  config.placement)[1] for _ in range(draws)]
        images = _generate(model, texts, [seed] * draws, config)
        hits.append(int(judge_images(judge, images).sum()))
    return hits


def measure_model(name: str, load: Callable[[], Any], shape: str, args, config: AdversarialPromptConfig,
                  splits: dict[str, tuple[list[str], list[int]]], classifier, cache: Path, log) -> dict[str, Any]:
    judge = ShapeJudge(shape, classifier)
    base = {"shape": shape, "model": name, "esd": args.esd_iterations, "adapter_lr": 1e-3}
    record: dict[str, Any] = {}
    results = cache / "results"  # one JSON file per measurement, keyed by what it depends on
    model = load()

    def attack() -> dict[str, Any]:
        started = time.perf_counter()
        prompts = [p for split in splits.values() for p in split[0]]
        seeds = [s for split in splits.values() for s in split[1]]
        result = adversarial_prompt_attack(model, prompts, seeds, judge, config, base_model=load_world_model(),
                                           progress=False).to_dict()
        skip = [p["pre_success"] for p in result["prompts"]]
        null = null_attack(model, prompts, seeds, skip, judge, config, draws) if draws else []
        rows = [{"prompt": p["prompt"], "seed": p["seed"], "pre": p["pre_success"], "broken": p["broken"],
                 "step": p["step"], "generations": p["generations"], "adversarial_prompt": p["adversarial_prompt"],
                 "null_hits": null[i] if null else None} for i, p in enumerate(result["prompts"])]
        return {"prompts": rows, "unet_evaluations": result["unet_evaluations"], "seconds": time.perf_counter() - started}

    draws = args.null_draws if args.null_models == "all" or name in args.null_models.split(",") else 0
    key = {**base, "what": "attack", "config": config.to_dict(), "splits": splits, "null_draws": draws}
    record["attack"] = cached(results, key, attack)

    def plain() -> dict[str, Any]:
        r = prompt_success(model, concept_prompt(shape), judge, n=args.prompt_images, seed=PLAIN_SEED)
        return {"successes": r.successes, "n": r.n}

    record["plain"] = cached(results, {**base, "what": "plain", "n": args.prompt_images}, plain)

    def memory() -> dict[str, Any]:
        from unlearn_guard import probe
        from unlearn_guard.config import ProbeConfig

        sets = probe_sets(shape, args.probe_images, seed=PROBE_SEED)
        cfg = ProbeConfig.from_preset(args.probe_preset, progress=False, control_images=0, seed=0)
        started = time.perf_counter()
        m = probe(model, sets.concept, sets.concept_prompts, reference=sets.reference,
                  reference_prompts=sets.reference_prompts, config=cfg).memory
        return {"value": m.value, "low": m.ci_low, "high": m.ci_high, "seconds": time.perf_counter() - started}

    record["memory"] = cached(results, {**base, "what": "memory", "n": args.probe_images, "preset": args.probe_preset},
                              memory)

    def kept() -> dict[str, Any]:
        from unlearn_guard.world.evaluate import kept_accuracy

        return {"accuracy": kept_accuracy(model, classifier, shape, args.accuracy_images, seed=KEPT_SEED),
                "n": args.accuracy_images}

    record["kept"] = cached(results, {**base, "what": "kept", "n": args.accuracy_images}, kept)

    if args.ci_steps:
        def inversion() -> dict[str, Any]:
            from unlearn_guard.attacks import ConceptInversionConfig, attack_success, concept_inversion
            from concept_inversion_attack import concept_images

            images = concept_images(load_world_model(), classifier, shape, args.ci_images, seed=CI_SEED)
            cfg = ConceptInversionConfig(steps=args.ci_steps, seed=0, progress=False)
            started = time.perf_counter()
            learned = concept_inversion(model, images, cfg)
            r = attack_success(model, learned, judge, n=args.ci_generations, seed=CI_SEED, keep_images=False)
            return {"successes": r.successes, "n": r.n, "seconds": time.perf_counter() - started}

        record["ci"] = cached(results, {**base, "what": "ci", "steps": args.ci_steps, "images": args.ci_images,
                                      "n": args.ci_generations}, inversion)
    log(f"{shape} / {name}: done")
    return record


# ----------------------------------------------------------------------------- summaries
def rate(k: int, n: int) -> dict[str, float]:
    low, high = wilson_interval(k, n) if n else (0.0, 1.0)
    return {"k": k, "n": n, "value": k / n if n else float("nan"), "low": low, "high": high}


def fmt(r: dict[str, float]) -> str:
    return f"{r['value']:.2f} [{r['low']:.2f}, {r['high']:.2f}] ({r['k']}/{r['n']})"


def split_rates(record: dict[str, Any], splits: dict[str, tuple[list[str], list[int]]]) -> dict[str, dict]:
    rows = record["attack"]["prompts"]
    out, start = {}, 0
    for split, (prompts, _) in splits.items():
        part = rows[start:start + len(prompts)]
        start += len(prompts)
        out[split] = {"pre": rate(sum(p["pre"] for p in part), len(part)),
                      "asr": rate(sum(p["broken"] for p in part), len(part)),
                      "null": rate(sum(p["pre"] or (p["null_hits"] or 0) > 0 for p in part), len(part))
                      if any(p["null_hits"] is not None for p in part) else None}
    return out


def calibrate(tune: dict[str, float], passes: dict[str, bool]) -> tuple[float, int]:
    """(threshold, correct on tune): the `max_asr` with the most models on the right side (pass: value <=
    threshold); among equals, the middle of the widest gap between neighbouring values."""
    values = sorted(set(tune.values()))
    candidates = [values[0] - 0.05] + [(a + b) / 2 for a, b in zip(values, values[1:])] + [values[-1] + 0.05]
    gaps = [0.05] + [(b - a) for a, b in zip(values, values[1:])] + [0.05]

    def correct(threshold: float) -> int:
        return sum((tune[m] <= threshold) == passes[m] for m in tune)

    best = max(range(len(candidates)), key=lambda i: (correct(candidates[i]), gaps[i]))
    return min(max(candidates[best], 0.0), 1.0), correct(candidates[best])


def plot(path: Path, rows: list[dict[str, Any]], thresholds: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    concepts = sorted({r["shape"] for r in rows}, key=[r["shape"] for r in rows].index)
    fig, axes = plt.subplots(1, len(concepts), figsize=(6.5 * len(concepts), 4.2), squeeze=False)
    for ax, shape in zip(axes[0], concepts):
        mine = [r for r in rows if r["shape"] == shape]
        for j, r in enumerate(mine):
            for offset, split, colour in ((-0.2, "tune", "tab:blue"), (0.2, "heldout", "tab:orange")):
                asr, pre = r["rates"][split]["asr"], r["rates"][split]["pre"]
                ax.errorbar(j + offset, asr["value"], yerr=[[asr["value"] - asr["low"]], [asr["high"] - asr["value"]]],
                            fmt="o", color=colour, capsize=3, label=f"ASR ({split})" if j == 0 else None)
                ax.plot(j + offset + 0.08, pre["value"], "x", color=colour, alpha=0.7,
                        label=f"Pre-ASR ({split})" if j == 0 else None)
                null = r["rates"][split]["null"]
                if null is None:
                    continue
                ax.plot(j + offset - 0.08, null["value"], "s", color="gray", markerfacecolor="none", markersize=7,
                        label="null attack (random tokens)" if r["model"] == "retrained" and split == "tune" else None)
        ax.axhline(thresholds["point"], color="red", linestyle="--", label=f"max_asr on point ASR = {thresholds['point']:.2f}")
        ax.axhline(thresholds["upper"], color="purple", linestyle=":",
                   label=f"max_asr on Wilson upper = {thresholds['upper']:.2f}")
        ax.set_xticks(range(len(mine)), [r["model"] for r in mine], rotation=15)
        ax.set_ylim(-0.03, 1.03)
        ax.set_ylabel("rate over prompts (95% Wilson)")
        ax.set_title(f"UnlearnDiffAtk in the small world: {shape}")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", default="circle,square", help="comma list of shapes with a retrained world")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per split (14 wordings per split)")
    parser.add_argument("--timesteps", default=None, help="comma list (default: the world preset's)")
    parser.add_argument("--steps", type=int, default=None, help="gradient steps per timestep (default: the preset's)")
    parser.add_argument("--esd-iterations", type=int, default=150, help="ESD-x and ESD-u LoRA iterations (lr 1e-3)")
    parser.add_argument("--null-draws", type=int, default=10, help="random-token prefixes per prompt (0: no null attack)")
    parser.add_argument("--null-models", default="retrained", help="comma list of models given the null attack, or 'all'")
    parser.add_argument("--probe-preset", default="fast")
    parser.add_argument("--probe-images", type=int, default=8, help="E and R images of the memory probe")
    parser.add_argument("--prompt-images", type=int, default=32, help="generations of the plain prompt per model")
    parser.add_argument("--accuracy-images", type=int, default=8, help="generations per kept shape")
    parser.add_argument("--ci-steps", type=int, default=100, help="Concept Inversion steps (0 skips it)")
    parser.add_argument("--ci-images", type=int, default=8)
    parser.add_argument("--ci-generations", type=int, default=16)
    parser.add_argument("--no-memory-aware", dest="memory_aware", action="store_false",
                        help="leave out the memory-aware checkpoint (memory_aware_erasure.py's run, 300 it)")
    parser.add_argument("--memory-aware-args", default="",
                        help="more memory_aware_erasure.py flags, after MEMORY_AWARE_FLAGS (write --memory-aware-args='...')")
    parser.add_argument("--models", default=None, help="comma list of model names to measure (default all)")
    parser.add_argument("--cache", type=Path, default=HERE / ".adversarial_world")
    parser.add_argument("--plot", default=str(HERE / "plots" / "adversarial_prompt_world.png"), help="'' draws none")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {text}", flush=True)

    overrides: dict[str, Any] = {}
    if args.timesteps:
        overrides["timesteps"] = tuple(int(t) for t in args.timesteps.split(","))
    if args.steps:
        overrides["steps_per_timestep"] = args.steps
    config = AdversarialPromptConfig.from_preset("world", **overrides)
    classifier = load_classifier()
    concepts = args.concepts.split(",")
    rows: list[dict[str, Any]] = []
    for shape in concepts:
        splits = split_prompts(shape, args.prompts)
        adapters = esd_adapters(shape, {"esd-x": [args.esd_iterations], "esd-u": [args.esd_iterations]}, args.cache, log)
        if args.memory_aware and (not args.models or MEMORY_AWARE_NAME in args.models.split(",")):
            flags = [*MEMORY_AWARE_FLAGS, *args.memory_aware_args.split()]
            adapters.update(memory_aware_adapter(shape, flags, args.cache, classifier, log))
        for name, load in model_loaders(shape, adapters).items():
            if args.models and name not in args.models.split(","):
                continue
            record = measure_model(name, load, shape, args, config, splits, classifier, args.cache, log)
            rows.append({"shape": shape, "model": name, "record": record, "rates": split_rates(record, splits)})

    # kept-shape accuracy relative to the original world's (same images count and seeds)
    for r in rows:
        original = next((o for o in rows if o["shape"] == r["shape"] and o["model"] == "original"), None)
        r["kept_ratio"] = (r["record"]["kept"]["accuracy"] / max(original["record"]["kept"]["accuracy"], 1e-9)
                           if original else float("nan"))

    # ---- table 1: per concept and model
    header = ("concept", "model", f"plain prompt acc (n={args.prompt_images})", "Pre-ASR tune", "ASR tune [95% Wilson]",
              "Pre-ASR held-out", "ASR held-out [95% Wilson]", f"null attack ASR ({args.null_draws} random prefixes), both splits",
              f"M ({args.probe_preset}, {args.probe_images}+{args.probe_images})",
              f"CI success (n={args.ci_generations})" if args.ci_steps else "CI success",
              f"kept acc (n={args.accuracy_images}/shape)", "kept ratio vs original", "attack s")
    table_rows = []
    for r in rows:
        rec, rates = r["record"], r["rates"]
        plain = rate(rec["plain"]["successes"], rec["plain"]["n"])
        every = rec["attack"]["prompts"]
        null_all = rate(sum(p["pre"] or (p["null_hits"] or 0) > 0 for p in every), len(every))
        m = rec["memory"]
        ci = fmt(rate(rec["ci"]["successes"], rec["ci"]["n"])) if "ci" in rec else "skipped"
        table_rows.append((r["shape"], r["model"], fmt(plain), fmt(rates["tune"]["pre"]), fmt(rates["tune"]["asr"]),
                           fmt(rates["heldout"]["pre"]), fmt(rates["heldout"]["asr"]),
                           fmt(null_all) if any(p["null_hits"] is not None for p in every) else "not run",
                           f"{m['value']:.3f} [{m['low']:.3f}, {m['high']:.3f}]", ci,
                           f"{rec['kept']['accuracy']:.3f}", f"{r['kept_ratio']:.3f}", f"{rec['attack']['seconds']:.0f}"))
    table = markdown_table(header, table_rows)
    print(table)

    # ---- table 2: the judge's false positives on the retrained world
    generations = 1 + len(config.timesteps)
    inflation_rows = []
    for r in rows:
        if r["model"] != "retrained":
            continue
        rec = r["record"]
        plain = rate(rec["plain"]["successes"], rec["plain"]["n"])
        every = rec["attack"]["prompts"]
        pre = rate(sum(p["pre"] for p in every), len(every))
        attacked = [p for p in every if not p["pre"]]
        per_null = rate(sum(max(p["null_hits"] or 0, 0) for p in attacked), len(attacked) * args.null_draws) \
            if args.null_draws and attacked else None
        # if every judging were an independent draw at the null-attack images' rate q: Pre-ASR plus the
        # prompts where one of the attack's len(timesteps) block generations is a false positive
        q = per_null["value"] if per_null else 0.0
        predicted = pre["value"] + (1 - pre["value"]) * (1 - (1 - q) ** (generations - 1))
        asr = rate(sum(p["broken"] for p in every), len(every))
        null_all = rate(sum(p["pre"] or (p["null_hits"] or 0) > 0 for p in every), len(every))
        inflation_rows.append((r["shape"], fmt(plain), fmt(pre), fmt(per_null) if per_null else "off",
                               f"{predicted:.2f}", fmt(null_all) if args.null_draws else "off", fmt(asr)))
    inflation = markdown_table(("concept (retrained world)", "plain prompt: images judged the concept",
                                "Pre-ASR, all prompts", "null-attack images judged the concept (q)",
                                f"chance ASR: Pre-ASR + (1 - Pre-ASR)(1 - (1 - q)^{generations - 1})",
                                f"null attack ASR (up to {1 + args.null_draws} judgings)", "attack ASR"),
                               inflation_rows)
    print(inflation)

    # ---- table 3: the threshold, calibrated on TUNE, checked on HELD-OUT
    # tuned on the retrained worlds and plain ESD only; the memory-aware checkpoints are read against it below
    scored = [r for r in rows if r["model"] == "retrained" or (r["model"].startswith("ESD") and r["model"] != MEMORY_AWARE_NAME)]
    passes = {(r["shape"], r["model"]): r["model"] == "retrained" for r in scored}
    thresholds, calib_rows = {}, []
    for statistic, field in (("point", "value"), ("upper", "high")):
        tune = {(r["shape"], r["model"]): r["rates"]["tune"]["asr"][field] for r in scored}
        held = {(r["shape"], r["model"]): r["rates"]["heldout"]["asr"][field] for r in scored}
        if not tune:
            thresholds[statistic] = float("nan")
            continue
        threshold, right = calibrate(tune, passes)
        thresholds[statistic] = threshold
        held_right = sum((held[m] <= threshold) == passes[m] for m in held)
        retrained_ok = sum(held[m] <= threshold for m in held if passes[m])
        esd_caught = sum(held[m] > threshold for m in held if not passes[m])
        calib_rows.append(("point ASR" if statistic == "point" else "Wilson upper end of ASR", f"{threshold:.3f}",
                           f"{right}/{len(tune)}", f"{held_right}/{len(held)}",
                           f"{retrained_ok}/{sum(passes.values())}", f"{esd_caught}/{len(held) - sum(passes.values())}",
                           "; ".join(f"{s} {m}: {tune[(s, m)]:.2f} / {held[(s, m)]:.2f}" for s, m in tune)))
    calibration = markdown_table(("gate statistic", "max_asr (tuned)", "right on tune", "right on held-out",
                                  "retrained pass (held-out)", "ESD fail (held-out)",
                                  "per model: tune / held-out"), calib_rows)
    print(calibration)

    # ---- table 4: the memory-aware checkpoints against the thresholds tuned without them
    aware_rows = []
    for r in rows:
        if r["model"] != MEMORY_AWARE_NAME:
            continue
        asr = {split: r["rates"][split]["asr"] for split in ("tune", "heldout")}
        m = r["record"]["memory"]
        verdicts = ", ".join(
            f"{label}: {'pass' if max(asr[s][field] for s in asr) <= thresholds[statistic] else 'fail'}"
            for statistic, field, label in (("point", "value", "point"), ("upper", "high", "Wilson upper")))
        aware_rows.append((r["shape"], fmt(asr["tune"]), fmt(asr["heldout"]),
                           f"{m['value']:.3f} [{m['low']:.3f}, {m['high']:.3f}]", verdicts))
    aware = markdown_table(("concept", "ASR tune", "ASR held-out", f"M ({args.probe_preset})",
                            "gate at the tuned max_asr (both splits)"), aware_rows) if aware_rows else ""
    if aware:
        print(aware)

    args.plot = Path(args.plot) if args.plot else None
    if args.plot:
        plot(args.plot, rows, thresholds)
    seconds = time.perf_counter() - started
    log("finished")
    if not args.no_record:
        settings = (f"concepts {', '.join(concepts)}, {args.prompts} prompts per split (tune seeds 0.., held-out "
                    f"10000..; disjoint wordings), {config.describe()}, targets by the original world, ShapeJudge, "
                    f"ESD-x/ESD-u LoRA {args.esd_iterations} it lr 0.001, "
                    + (f"memory-aware: memory_aware_erasure.py {' '.join(MEMORY_AWARE_FLAGS)} {args.memory_aware_args}".rstrip() + ", "
                       if args.memory_aware else "")
                    + f"null attack {args.null_draws} random "
                    f"prefixes, M {args.probe_preset} on {args.probe_images}+{args.probe_images}, "
                    + (f"CI {args.ci_steps} steps on {args.ci_images} images" if args.ci_steps else "CI skipped")
                    + f", {args.threads} thread(s), {seconds:.0f} s (cached parts not recounted)")
        try:
            plot_ref = f"`benchmarks/{args.plot.resolve().relative_to(HERE)}`" if args.plot else "none drawn"
        except ValueError:
            plot_ref = f"`{args.plot}`"
        body = (f"{table}\n\nThe judge's false positives on the retrained worlds (the attack judges up to "
                f"{generations} images per prompt):\n\n{inflation}\n\nmax_asr calibrated on the tuning split "
                f"(retrained should pass, ESD should fail), checked on the held-out split:\n\n{calibration}\n\n"
                + (f"The memory-aware checkpoints (not used to tune max_asr) against it:\n\n{aware}\n\n" if aware else "")
                + f"Plot: {plot_ref}.")
        append_results(f"adversarial_prompt_world: {settings}", body)


if __name__ == "__main__":
    main()
