"""How far a probe's numbers move with the dtype and the chunk size, per model family, against float64.

The same tiny random-weight model is built twice, once predicting eps (SD 1.x) and once predicting
v (SD 2.x 768); with --worlds also the trained shapes world and its v fine-tune
(benchmarks/v_prediction_world.py). Each is probed with the noise regulariser on and off. Each row
compares a probe in float64 with all images in one chunk, in float32 (chunk 1 and all images in one
chunk) or with the UNet and text encoder in bfloat16 (the fast path's cast; VAE float32) against the
same probe in float64 at chunk 1, and records the smallest 4x4-patch variance of the eps the
regulariser was handed: PatchKL's gradient grows as 1 / variance (SPEC 2.5), so a nearly flat patch
amplifies round-off until the gradient clip.

    .venv/bin/python benchmarks/precision_sensitivity.py                 # ~1 minute on 1 CPU thread
    .venv/bin/python benchmarks/precision_sensitivity.py --worlds        # + the trained eps and v worlds
"""

from __future__ import annotations

import argparse
import dataclasses
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from unlearn_guard import DiffusionModel, ProbeConfig, probe
from unlearn_guard.inversion import renoise
from unlearn_guard.models.tiny import TinyModelSpec, build_tiny_components

from _results import append_results, markdown_table

warnings.filterwarnings("ignore", message="the negative control is off")
warnings.filterwarnings("ignore", message=".*should be kept in float32.*")


def smooth_images(count: int, side: int, seed: int) -> torch.Tensor:
    """(count, 3, side, side) in [0, 1]: bilinear upsampling of 8x8 uniform noise (image-like, not flat)."""
    coarse = torch.rand(count, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False).clamp(0, 1)


def cast(make: Callable[[], DiffusionModel], dtype: torch.dtype, unet_dtype: torch.dtype | None = None) -> DiffusionModel:
    """A fresh model in `dtype`; with `unet_dtype`, the UNet and text encoder in it instead (the fast path's cast)."""
    model = make().to(dtype=dtype)
    if unet_dtype is not None:
        model.unet.to(unet_dtype)
        model.text_encoder.to(unet_dtype)
    return model


@dataclass
class Subject:
    """A model to measure (built fresh per row) and the images E and R its probes read."""

    name: str
    make: Callable[[], DiffusionModel]
    images: torch.Tensor
    prompts: list[str]
    reference: torch.Tensor
    reference_prompts: list[str]


def subjects(args: argparse.Namespace) -> list[Subject]:
    """The tiny random-weight eps and v models on smooth images; with --worlds also the trained
    shapes world (eps) and its v fine-tune (benchmarks/v_prediction_world.py) on circles against
    the other shapes."""
    found = []
    for family in ("epsilon", "v_prediction"):
        components = build_tiny_components(seed=0, spec=TinyModelSpec(prediction_type=family))
        found.append(Subject(f"tiny random, {family}", lambda c=components: DiffusionModel.from_components(**c),
                             smooth_images(args.images, 64, args.seed), ["a shape"] * args.images,
                             smooth_images(args.images, 64, args.seed + 1), ["a shape"] * args.images))
    if args.worlds:
        from unlearn_guard.world import load_world_model
        from unlearn_guard.world.evaluate import probe_sets

        import v_prediction_world

        v_args = v_prediction_world.build_parser().parse_args(["--threads", str(args.threads)])
        sets = probe_sets("circle", args.images, seed=args.seed)
        pixels = [sets.concept.float() / 255, list(sets.concept_prompts), sets.reference.float() / 255,
                  list(sets.reference_prompts)]
        found.append(Subject("shapes world, epsilon", load_world_model, *pixels))
        found.append(Subject("shapes world fine-tuned, v_prediction",
                             lambda: v_prediction_world.fine_tune(None, v_args)[0], *pixels))
    return found


@contextmanager
def smallest_patch_variance(patch: int) -> Iterator[list[float]]:
    """Record, per regulariser call, the smallest unbiased variance over the 4x4 patches of its eps."""
    seen: list[float] = []
    original = renoise.noise_regularization

    def recording(eps, *args, **kwargs):
        patches = eps.detach().double().unfold(2, patch, patch).unfold(3, patch, patch)
        seen.append(patches.reshape(*patches.shape[:4], -1).var(-1, unbiased=True).min().item())
        return original(eps, *args, **kwargs)

    renoise.noise_regularization = recording
    try:
        yield seen
    finally:
        renoise.noise_regularization = original


def _memory(result) -> str:
    """The memory score M (what the gate and the monitor decide on), or "-" where undefined."""
    return "-" if result.memory is None else f"{result.memory.value:.3f}"


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="fast", help="probe preset (its regulariser is toggled per row)")
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="inversion steps (default: the preset's)")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the images")
    parser.add_argument("--worlds", action="store_true",
                        help="also the trained shapes world and its v fine-tune (trained first if not cached)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-record", action="store_true")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for subject in subjects(args):
        images, reference_images = subject.images, subject.reference
        for regularize in (True, False):
            base = ProbeConfig.from_preset(args.preset, progress=False, control_images=0, keep_seeds=True)
            config = dataclasses.replace(base, inversion=dataclasses.replace(
                base.inversion, num_steps=args.steps or base.inversion.num_steps,
                regularization=dataclasses.replace(base.inversion.regularization, enabled=regularize)))

            def run(dtype: torch.dtype, unet_dtype: torch.dtype | None, chunk: int):
                return probe(cast(subject.make, dtype, unet_dtype), images.to(dtype), subject.prompts,
                             reference=reference_images.to(dtype), reference_prompts=subject.reference_prompts,
                             config=config, batch_size=chunk)

            reference = run(torch.float64, None, 1)
            variants = [(f"float64, chunk {args.images}", torch.float64, None, args.images),
                        ("float32, chunk 1", torch.float32, None, 1),
                        (f"float32, chunk {args.images}", torch.float32, None, args.images),
                        ("UNet bf16, chunk 1", torch.float32, torch.bfloat16, 1)]
            for name, dtype, unet_dtype, chunk in variants:
                with smallest_patch_variance(config.inversion.regularization.patch_size) as variances:
                    result = run(dtype, unet_dtype, chunk)
                seed_error = (result.erased.seeds.double() - reference.erased.seeds).abs()
                nll = ((result.erased.nll.double() - reference.erased.nll).abs() / reference.erased.nll.abs()).max().item()
                psnr = (result.erased.psnr.double() - reference.erased.psnr).abs().max().item()
                rows.append([subject.name, "on" if regularize else "off", name, f"{seed_error.max().item():.2e}",
                             f"{seed_error.mean().item():.2e}", f"{nll:.2e}", f"{psnr:.2e}",
                             f"{reference.d_n:.4f}", f"{abs(result.d_n - reference.d_n) / abs(reference.d_n):.2e}",
                             _memory(reference), _memory(result),
                             f"{min(variances):.1e}" if variances else "-"])
                print(rows[-1], flush=True)

    header = ["model", "regulariser", "variant", "max |seed - fp64|", "mean |seed - fp64|", "max NLL rel. error",
              "max |PSNR - fp64| dB", "d_N (fp64)", "d_N rel. error", "M (fp64)", "M (variant)", "smallest patch variance"]
    table = markdown_table(header, rows)
    note = (f"Tiny random-weight models (seed 0) on {args.images} smooth images (seed {args.seed}), a second set "
            f"(seed {args.seed + 1}) as R for d_N"
            + (f"; the trained worlds on {args.images} circles against {args.images} other shapes (seed {args.seed})"
               if args.worlds else "")
            + f"; preset {args.preset} ({config.inversion.num_steps} steps); each row against the same probe in "
            "float64 at chunk 1. Patch variance: the smallest over the regulariser's calls in that row.")
    print(table)
    print(note)
    if not args.no_record:
        append_results("precision_sensitivity: eps vs v model, dtype and chunk against float64", f"{table}\n\n{note}")


if __name__ == "__main__":
    main()
