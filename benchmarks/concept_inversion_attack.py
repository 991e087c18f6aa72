"""Concept Inversion in the small world (Pham et al., ICLR 2024; SPEC 7): does a learned token bring
an erased concept back, and does it on a model that never learned the concept?

Per concept (circle, square) and model (the original world, ESD-x LoRA after 150 and 300
iterations of one run, the world retrained without the concept): the classifier accuracy of images
generated from the plain prompt ("a circle"), then Concept Inversion on that model (the concept's
images, as in the paper made by the original model from the concept prompt and kept when the
classifier agrees) and the attack success rate of generations with the learned token, both with
Wilson intervals, and the attack's cost in seconds per checkpoint (training + generation). Prints
a table and appends it to benchmarks/RESULTS.md. Report what comes out.

    .venv/bin/python benchmarks/concept_inversion_attack.py --threads 1
    .venv/bin/python benchmarks/concept_inversion_attack.py --concepts circle --steps 300 --images 16
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from unlearn_guard.attacks import ConceptInversionConfig, ShapeJudge, attack_success, concept_inversion, prompt_success
from unlearn_guard.trainers import ESDConfig, esd_lora_erase
from unlearn_guard.world import concept_prompt, load_classifier, load_world_model
from unlearn_guard.world.generate import generate

from _results import append_results, markdown_table


def concept_images(model, classifier, shape: str, count: int, seed: int) -> torch.Tensor:
    """`count` images the original model makes from the concept prompt that the classifier calls the concept."""
    from unlearn_guard.world import SHAPES

    kept, start = [], seed
    while sum(len(k) for k in kept) < count and start < seed + 20 * count:
        images = generate(model, [concept_prompt(shape)] * count, seed=start)
        kept.append(images[classifier.predict(images) == SHAPES.index(shape)])
        start += count
    found = torch.cat(kept)[:count]
    if len(found) < count:
        raise SystemExit(f"the original model made only {len(found)} {shape}s the classifier recognises")
    return found


def esd_checkpoints(prompt: str, iterations: list[int], lr: float, seed: int) -> list[tuple[str, object]]:
    """One ESD-x LoRA run on the shipped world; the model with the adapter as saved at each of `iterations`."""
    import tempfile
    from pathlib import Path

    from unlearn_guard.models import load_model
    from unlearn_guard.trainers import save_esd_adapter
    from unlearn_guard.world import WEIGHTS_DIR

    folder = Path(tempfile.mkdtemp(prefix="ci_esd_"))
    erased = load_world_model()
    config = ESDConfig(concept=prompt, iterations=max(iterations), lr=lr, seed=seed)

    def on_step(iteration: int, loss: float) -> None:
        if iteration + 1 in iterations:
            save_esd_adapter(erased, folder / f"checkpoint-{iteration + 1}", config=config)

    esd_lora_erase(erased, config, progress=False, on_step=on_step)
    return [(f"ESD-x {i} it", load_model(str(WEIGHTS_DIR / "pipeline"), lora=folder / f"checkpoint-{i}"))
            for i in iterations]


def measure(model, images, judge, config: ConceptInversionConfig, prompt: str, n: int, seed: int) -> dict:
    plain = prompt_success(model, prompt, judge, n=n, seed=seed)
    started = time.perf_counter()
    learned = concept_inversion(model, images, config)
    trained = time.perf_counter() - started
    attack = attack_success(model, learned, judge, n=n, seed=seed, keep_images=False)
    return {"plain": plain, "attack": attack, "train_s": trained, "total_s": time.perf_counter() - started,
            "loss": sum(learned.losses[-30:]) / len(learned.losses[-30:])}


def cell(result) -> str:
    return f"{result.rate:.2f} [{result.ci_low:.2f}, {result.ci_high:.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", default="circle,square", help="comma list (retrained worlds ship for circle, square)")
    parser.add_argument("--checkpoints", default="150,300", help="ESD-x iterations to attack, one run (comma list)")
    parser.add_argument("--esd-lr", type=float, default=1e-3)
    parser.add_argument("--images", type=int, default=16, help="concept images Concept Inversion trains on")
    parser.add_argument("--steps", type=int, default=ConceptInversionConfig().steps)
    parser.add_argument("--lr", type=float, default=ConceptInversionConfig().lr)
    parser.add_argument("--init-token", default=ConceptInversionConfig().init_token,
                        help="the token's start ('shape' is not a world word: the unknown token's row, a generic start)")
    parser.add_argument("--generations", type=int, default=32, help="images judged per model and prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="init_token")  # 'shape' starts from the unknown token, on purpose

    checkpoints = sorted(int(c) for c in args.checkpoints.split(","))
    config = ConceptInversionConfig(steps=args.steps, lr=args.lr, init_token=args.init_token, seed=args.seed,
                                    progress=False)
    classifier = load_classifier()
    rows, started = [], time.perf_counter()
    for shape in args.concepts.split(","):
        judge = ShapeJudge(shape, classifier)
        prompt = concept_prompt(shape)
        images = concept_images(load_world_model(), classifier, shape, args.images, seed=50_000 + args.seed)
        models = [("original", load_world_model())]
        models += esd_checkpoints(prompt, checkpoints, args.esd_lr, args.seed)
        models.append((f"retrained without {shape}", load_world_model(without=shape)))
        for name, model in models:
            m = measure(model, images, judge, config, prompt, args.generations, args.seed)
            rows.append((shape, name, cell(m["plain"]), cell(m["attack"]), f"{m['loss']:.4f}", f"{m['train_s']:.1f}",
                         f"{m['total_s']:.1f}"))
            print(f"{shape} / {name}: plain {cell(m['plain'])}, attack {cell(m['attack'])} "
                  f"({m['total_s']:.0f} s)", flush=True)
    header = ("concept", "model", f"plain prompt acc [95% Wilson] (n={args.generations})",
              "Concept Inversion success [95% Wilson]", "loss (last 30)", "train s", "s per checkpoint")
    table = markdown_table(header, rows)
    print(table)
    if not args.no_record:
        append_results(f"concept_inversion_attack: shapes world, {args.images} images made by the original model, "
                       f"{args.steps} steps lr {args.lr} init {args.init_token!r}, ESD-x lr {args.esd_lr}, "
                       f"{args.threads} thread(s), {time.perf_counter() - started:.0f} s", table)


if __name__ == "__main__":
    main()
