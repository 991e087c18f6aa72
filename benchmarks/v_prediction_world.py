"""Ground truth for v-prediction (SD 2.x 768-style) models: the shipped worlds fine-tuned to predict v.

The shipped world (knows circles) and the world retrained without circles (never saw one) are each
fine-tuned with the v target (diffusers' `get_velocity`) on their own training data, the retrained
one's without any circle: what each model knows stays as it was, only what its UNet predicts
changes. For each of the four models (eps and v; original and retrained) the table gives the
circle accuracy of its generations (the shipped classifier), the memory score M on the calibration's
held-out split (images no threshold saw) and the verdict at the default --max-memory; and for both
originals the controls, stars and uniform noise (images no model of this world can make). Nothing was
tuned on the v models: every threshold comes from the eps worlds.

    .venv/bin/python benchmarks/v_prediction_world.py            # fine-tuned UNets cached in benchmarks/.v_world
    .venv/bin/python benchmarks/v_prediction_world.py --steps 2 --dataset-size 256 --images 2 --preset fast \
        --batch 8 --accuracy-images 2 --cache /tmp/v_world                       # smoke
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch

from unlearn_guard import DiffusionModel, ProbeConfig, probe
from unlearn_guard.signal import DEFAULT_MAX_MEMORY
from unlearn_guard.world import load_classifier, load_world_model
from unlearn_guard.world.evaluate import accuracy_from_prompt, out_of_world_images, probe_sets
from unlearn_guard.world.shapes import make_dataset
from unlearn_guard.world.train import WorldTrainingConfig, encode_dataset, retain_set, train_unet

from _results import append_results, cached, markdown_table

warnings.filterwarnings("ignore", message="the negative control is off")
HELDOUT_SEED = 83_000  # the calibration's held-out split (benchmarks/calibrate_memory_signal.py)


def v_scheduler(model: DiffusionModel):
    """The model's own DDIM scheduler, predicting v."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config({**model.scheduler_config, "prediction_type": "v_prediction"})


def fine_tune(without: str | None, args: argparse.Namespace) -> tuple[DiffusionModel, float, float]:
    """The world (`without` None) or the world retrained without `without`, its UNet fine-tuned to
    predict v on that world's training data; (model, last-200-step mean loss, seconds), UNet cached."""
    from diffusers import UNet2DConditionModel

    eps = load_world_model(without=without)
    key = {"without": without, "steps": args.steps, "lr": args.lr, "batch": args.batch,
           "dataset_size": args.dataset_size, "seed": args.seed}
    folder = Path(args.cache) / "_".join(f"{k}{v}" for k, v in key.items())

    def train() -> dict:
        torch.manual_seed(args.seed)
        config = WorldTrainingConfig(seed=args.seed, dataset_size=args.dataset_size, unet_steps=args.steps,
                                     unet_lr=args.lr, unet_batch=args.batch, exclude=without,
                                     prediction_type="v_prediction")
        pixels, scenes, _ = make_dataset(config.dataset_size, config.seed)  # the worlds' own training draw
        pixels, scenes = retain_set(pixels, scenes, without)
        with torch.no_grad():
            means, stds = encode_dataset(eps.vae, pixels)
        started = time.perf_counter()
        unet, losses = train_unet(eps.unet, eps.text_encoder, eps.tokenizer, means, stds, scenes,
                                  float(eps.vae.config.scaling_factor), v_scheduler(eps), config, progress=True)
        unet.save_pretrained(folder / "unet", safe_serialization=True)
        tail = losses[-200:]
        return {"loss": sum(tail) / len(tail), "seconds": time.perf_counter() - started}

    found = cached(folder, key, train)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet").eval()
    model = DiffusionModel.from_components(unet=unet, vae=eps.vae, text_encoder=eps.text_encoder,
                                           tokenizer=eps.tokenizer, scheduler=v_scheduler(eps),
                                           source=f"v world{'' if without is None else f' without {without}'}")
    return model, found["loss"], found["seconds"]


def memory_row(model: DiffusionModel, concept: torch.Tensor, prompts: list[str], sets, config: ProbeConfig) -> list:
    """M [CI] on `concept` against the held-out reference set, and the verdict at the default bar."""
    result = probe(model, concept, prompts, reference=sets.reference, reference_prompts=sets.reference_prompts,
                   config=config)
    memory = result.memory
    if memory is None:  # the gate's "inconclusive": the probe cannot read memory in this model
        print(f"{model.source}: {'; '.join(result.notes)}")
        return ["undefined", "inconclusive (the probe cannot read memory in it)"]
    verdict = "remembers" if memory.ci_high > DEFAULT_MAX_MEMORY else "does not remember"
    return [f"{memory.value:.3f} [{memory.ci_low:.3f}, {memory.ci_high:.3f}]", verdict]


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500, help="fine-tuning steps per world")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dataset-size", type=int, default=24000, help="the worlds' training draw (seed --seed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=12, help="per set (E and R), as the calibration")
    parser.add_argument("--control-images", type=int, default=None,
                        help="images of each control set (default: --images); R stays --images")
    parser.add_argument("--preset", default="mofc")
    parser.add_argument("--accuracy-images", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default=str(Path(__file__).with_name(".v_world")), help="fine-tuned UNets")
    parser.add_argument("--no-record", action="store_true")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    torch.set_num_threads(args.threads)
    classifier = load_classifier()
    sets = probe_sets("circle", args.images, seed=HELDOUT_SEED)
    config = ProbeConfig.from_preset(args.preset, progress=False)
    rows, notes = [], []
    for without, knows in ((None, "yes"), ("circle", "no")):
        eps = load_world_model(without=without)
        v, loss, seconds = fine_tune(without, args)
        notes.append(f"{v.source}: {args.steps} steps, final loss {loss:.4f}, {seconds:.0f} s")
        for model in (eps, v):
            accuracy = accuracy_from_prompt(model, classifier, "circle", args.accuracy_images, seed=HELDOUT_SEED)
            rows.append([model.source if model is v else f"eps world{'' if without is None else ' without circle'}",
                         model.prediction_type, "circles", knows, f"{accuracy:.2f}",
                         *memory_row(model, sets.concept, sets.concept_prompts, sets, config)])
            print(rows[-1], flush=True)
        if without is None:
            for kind in ("star", "noise"):  # images no model of this world can make (seed + 500, as calibrated)
                images, prompts = out_of_world_images(kind, args.control_images or args.images, seed=HELDOUT_SEED + 500)
                for model, name in ((eps, "eps world"), (v, v.source)):
                    rows.append([name, model.prediction_type, kind, "no (control)", "-",
                                 *memory_row(model, images, prompts, sets, config)])
                    print(rows[-1], flush=True)
    header = ["model", "predicts", "images E", "model knows E", "circle accuracy", f"M ({args.preset}) [CI]",
              f"verdict at max M {DEFAULT_MAX_MEMORY}"]
    table = markdown_table(header, rows)
    note = (f"Held-out split (seed {HELDOUT_SEED}), {args.images} + {args.images} images "
            f"({args.control_images or args.images} per control set), preset {args.preset}; "
            f"circle accuracy over {args.accuracy_images} generations of 'a circle'; v fine-tuning lr {args.lr}, "
            f"batch {args.batch}, {args.dataset_size} images drawn (seed {args.seed}). " + "; ".join(notes))
    print(table)
    print(note)
    if not args.no_record:
        append_results(f"v_prediction_world: ground truth on v-prediction worlds, {args.threads} thread(s)",
                       f"{table}\n\n{note}")


if __name__ == "__main__":
    main()
