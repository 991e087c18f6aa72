"""UnlearnDiffAtk adversarial prompts (SPEC 9) in the small world: batched over prompts against one
prompt at a time, side by side in one run, on the same prompts, seeds and config.

Rows (every row attacks the world retrained without the concept, targets made by the original world):
  batched       `batch_size` prompts per UNet call; a prompt that succeeds leaves, the next joins
  batch 1       the same call with batch_size=1, in this process: one prompt at a time
  process per prompt   each prompt in a fresh Python process with batch_size=1 (imports, model
                loads and all), as the released code runs one attack index per launch (--modes)
The in-process rows time the attack alone (models loaded once, before, and one warm-up call);
the process rows time each process from start to exit. Reports UNet sample-evaluations by phase, seconds per prompt, the speedup over batch 1, Pre-ASR
and ASR, and whether every prompt's answer (verdicts, step, tokens) equals batch 1's. Prints a
table and appends it to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/adversarial_prompt_speed.py --threads 1
    .venv/bin/python benchmarks/adversarial_prompt_speed.py --prompts 2 --timesteps 50,150 --modes batched,batch1

`--model sd14-shaped` (the GPU line in benchmarks/gpu.sh) attacks the SD 1.4 architecture with random
weights instead, at the `unlearndiffatk` preset's settings (k=5, 40 steps per timestep, 50 DDIM steps at
guidance 7.5) on `--timesteps` only, with random target images and a judge that never says yes: every
prompt runs every block, the worst case. From the measured seconds per prompt-block it extrapolates the
full 50-timestep sweep of the 142-prompt nudity set (UnlearnDiffAtk's I2P subset), in GPU-hours, with
no early stop (the real attack stops at its first success, so this is an upper bound).

    .venv/bin/python benchmarks/adversarial_prompt_speed.py --model sd14-shaped --device cuda --dtype bfloat16 \\
        --prompts 16 --batch-size 16 --timesteps 10,510 --modes batched,batch1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from unlearn_guard.attacks import AdversarialPromptConfig, ShapeJudge, adversarial_prompt_attack
from unlearn_guard.world import load_world_model

from _results import append_results, markdown_table  # noqa: E402

MODES = ("batched", "batch1", "process")
LABELS = {"batched": "batched", "batch1": "batch 1 (in process)", "process": "process per prompt (batch 1)"}


def prompt_set(concept: str, count: int) -> tuple[list[str], list[int]]:
    """`count` prompts naming the concept (plain, with a colour, with a background), seeds 0..count-1."""
    from unlearn_guard.world.shapes import BACKGROUNDS, COLOURS

    variants = [f"a {concept}", *(f"a {c} {concept}" for c in COLOURS),
                *(f"a {concept} on a {b} background" for b in BACKGROUNDS)]
    return [variants[i % len(variants)] for i in range(count)], list(range(count))


NUDITY_PROMPTS = 142  # UnlearnDiffAtk's nudity prompt set (I2P subset)


def load(concept: str) -> tuple:
    """(the world retrained without `concept`, the original world, the classifier's judge)."""
    return load_world_model(without=concept), load_world_model(), ShapeJudge(concept)


def never(images: torch.Tensor) -> torch.Tensor:
    """A judge that never sees the concept: every prompt runs every block (the attack's worst case)."""
    return torch.zeros(len(images), dtype=torch.bool)


def load_random(name: str, device: str, dtype: torch.dtype, prompts: int) -> tuple:
    """(the random-weight model `name` on `device`, random targets for `prompts` prompts, `never`):
    sd14-shaped for the GPU line, tiny to run the same path on a CPU in seconds."""
    from unlearn_guard import DiffusionModel
    from unlearn_guard.models.tiny import build_sd14_shaped_components, build_tiny_components

    build = build_sd14_shaped_components if name == "sd14-shaped" else build_tiny_components
    model = DiffusionModel.from_components(**build(seed=0)).to(device, dtype)
    targets = torch.rand(prompts, 3, model.resolution, model.resolution, generator=torch.Generator().manual_seed(0))
    return model, targets, never


def attack(models: tuple, prompts: list[str], seeds: list[int], config: AdversarialPromptConfig):
    erased, base, judge = models
    if isinstance(base, torch.Tensor):  # sd14-shaped: given targets, one per prompt
        index = [int(s) for s in seeds]
        return adversarial_prompt_attack(erased, prompts, seeds, judge, config, targets=base[index], progress=False)
    return adversarial_prompt_attack(erased, prompts, seeds, judge, config, base_model=base, progress=False)


def answers(prompts: list[dict]) -> list[tuple]:
    return [(p["pre_success"], p["success"], p["step"], p["tokens"]) for p in prompts]


def run_in_process(models, prompts, seeds, config) -> dict:
    """The attack alone, timed (the models are loaded once, before)."""
    started = time.perf_counter()
    result = attack(models, prompts, seeds, config).to_dict()
    return {"prompts": result["prompts"], "evals": result["unet_evaluations"], "seconds": time.perf_counter() - started}


def run_per_process(concept, prompts, seeds, config, threads: int) -> dict:
    """Each prompt in a fresh `python THIS --worker JOB` process; wall time includes its start-up."""
    rows, evals, started = [], {}, time.perf_counter()
    for prompt, seed in zip(prompts, seeds):
        job = json.dumps({"concept": concept, "prompt": prompt, "seed": seed, "config": config.to_dict(),
                          "threads": threads})
        done = subprocess.run([sys.executable, __file__, "--worker", job], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"the process for prompt {prompt!r} failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        rows += result["prompts"]
        evals = {k: evals.get(k, 0) + v for k, v in result["unet_evaluations"].items()}
    return {"prompts": rows, "evals": evals, "seconds": time.perf_counter() - started}


def worker(job: str) -> None:
    """One prompt, as its own process: prints the result's JSON on the last line."""
    spec = json.loads(job)
    torch.set_num_threads(spec["threads"])
    config = AdversarialPromptConfig.from_dict(spec["config"])
    print(json.dumps(attack(load(spec["concept"]), [spec["prompt"]], [spec["seed"]], config).to_dict()))


def build_parser() -> argparse.ArgumentParser:
    """The command line (benchmarks/_gpu_run.py checks its steps' flags against it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concept", default="circle", help="a shape with a shipped retrained world (circle, square)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per UNet call in the batched row")
    parser.add_argument("--timesteps", default=None, help="comma list (default: the world preset's 50, 150, ..., 950)")
    parser.add_argument("--steps", type=int, default=None, help="gradient steps per timestep (default: the preset's)")
    parser.add_argument("--modes", default="batched,batch1,process", help=f"comma list of {', '.join(MODES)}")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--model", choices=("world", "sd14-shaped", "tiny"), default="world",
                        help="tiny: the sd14-shaped path (random weights and targets, never-true judge) at toy size")
    parser.add_argument("--device", default="cpu", help="sd14-shaped/tiny only (cuda on a GPU machine)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="sd14-shaped/tiny only")
    parser.add_argument("--generation-steps", type=int, default=None,
                        help="DDIM steps of each judged generation (default: the preset's)")
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # one prompt, as its own process
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.worker is not None:
        return worker(args.worker)
    torch.set_num_threads(args.threads)
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in MODES for m in modes):
        raise SystemExit(f"--modes: got {args.modes!r}; expected a comma list of {', '.join(MODES)}")

    overrides = {}
    if args.timesteps:
        overrides["timesteps"] = tuple(int(t) for t in args.timesteps.split(","))
    if args.steps:
        overrides["steps_per_timestep"] = args.steps
    sd14 = args.model != "world"
    if sd14 and "process" in modes:
        raise SystemExit("--modes process: the world only (a process per prompt would rebuild the random model)")
    if args.generation_steps:
        overrides["num_steps"] = args.generation_steps
    config = AdversarialPromptConfig.from_preset("unlearndiffatk" if sd14 else "world", **overrides)
    prompts, seeds = prompt_set(args.concept, args.prompts)
    if args.model == "sd14-shaped":
        prompts = [f"a photo of a person, {p}" for p in prompts]
    elif args.model == "tiny":  # its character tokenizer takes 16 tokens: room for 5 adversarial ones
        prompts = [f"a {args.concept}"] * len(prompts)
    runs, started = {}, time.perf_counter()
    models = load_random(args.model, args.device, getattr(torch, args.dtype), args.prompts) if sd14 else load(args.concept)
    attack(models, prompts[:1], seeds[:1], config.replace(timesteps=config.timesteps[:1], steps_per_timestep=1))  # warm-up
    for mode in modes:
        if mode == "process":
            runs[mode] = run_per_process(args.concept, prompts, seeds, config.replace(batch_size=1), args.threads)
        else:
            size = args.batch_size if mode == "batched" else 1
            runs[mode] = run_in_process(models, prompts, seeds, config.replace(batch_size=size))
        print(f"{LABELS[mode]}: {runs[mode]['seconds']:.1f} s", flush=True)

    reference = runs.get("batch1", next(iter(runs.values())))
    rows = []
    for mode, run in runs.items():
        n = len(run["prompts"])
        pre = sum(p["pre_success"] for p in run["prompts"])
        broken = sum(p["broken"] for p in run["prompts"])
        evals = run["evals"]
        rows.append((LABELS[mode], min(args.batch_size, n) if mode == "batched" else 1, f"{pre}/{n}", f"{broken}/{n}",
                     evals["attack"], evals["attack_generation"], evals["pre_attack"] + evals["targets"],
                     sum(evals.values()), f"{run['seconds'] / n:.2f}", f"{reference['seconds'] / run['seconds']:.2f}",
                     "yes" if answers(run["prompts"]) == answers(reference["prompts"]) else "NO"))
    header = ("run", "batch", "Pre-ASR", "ASR", "UNet evals: attack steps", "block generations",
              "pre-attack + targets", "total", "s/prompt", f"speedup vs {LABELS['batch1'] if 'batch1' in runs else modes[0]}",
              "answers equal")
    table = markdown_table(header, rows)
    if sd14:
        table += "\n\n" + extrapolation(runs, config)
    print(table)
    if not args.no_record:
        subject = (f"{args.model} random weights on {args.device} {args.dtype}, never-true judge (every block runs)"
                   if sd14 else f"shapes world without {args.concept}")
        append_results(f"adversarial_prompt_speed: {subject}, {args.prompts} prompts, "
                       f"{config.describe()}, {args.threads} thread(s), {time.perf_counter() - started:.0f} s", table)


def extrapolation(runs: dict, config: AdversarialPromptConfig) -> str:
    """Seconds per prompt-block measured on the timesteps given, scaled to the full 50-block sweep of
    the 142 nudity prompts with no early stop (an upper bound: the attack stops at its first success)."""
    full_blocks = len(range(10, 1000, 20))
    rows = []
    for mode, run in runs.items():
        blocks = len(run["prompts"]) * len(config.timesteps)
        per_block = run["seconds"] / blocks
        rows.append((LABELS[mode], f"{per_block:.2f}", f"{per_block * full_blocks:.0f}",
                     f"{per_block * full_blocks * NUDITY_PROMPTS / 3600:.2f}"))
    return markdown_table(("run", f"s per prompt-block ({config.steps_per_timestep} steps + 1 generation)", "s per prompt, 50 blocks",
                           f"hours for {NUDITY_PROMPTS} prompts, no early stop"), rows)


if __name__ == "__main__":
    main()
