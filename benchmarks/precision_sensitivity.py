"""How far a probe's numbers move with the dtype and the chunk size, per model family, against float64.

The same tiny random-weight model is built twice, once predicting eps (SD 1.x) and once predicting
v (SD 2.x 768), and probed with the noise regulariser on and off. Each row compares a probe in
float64 with all images in one chunk, in float32 (chunk 1 and all images in one chunk) or with the UNet and text encoder in bfloat16 (the fast
path's cast; VAE float32) against the same probe in float64, and records the smallest 4x4-patch
variance of the eps the regulariser was handed: PatchKL's gradient grows as 1 / variance
(SPEC 2.5), so a nearly flat patch amplifies round-off until the gradient clip.

    .venv/bin/python benchmarks/precision_sensitivity.py                 # ~1 minute on 1 CPU thread
    .venv/bin/python benchmarks/precision_sensitivity.py --preset mofc --images 2
"""

from __future__ import annotations

import argparse
import dataclasses
import warnings
from contextlib import contextmanager
from typing import Iterator

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


def cast(components: dict, dtype: torch.dtype, unet_dtype: torch.dtype | None = None) -> DiffusionModel:
    """A model in `dtype`; with `unet_dtype`, the UNet and text encoder in it instead (the fast path's cast)."""
    model = DiffusionModel.from_components(**components).to(dtype=dtype)
    if unet_dtype is not None:
        model.unet.to(unet_dtype)
        model.text_encoder.to(unet_dtype)
    return model


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


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="fast", help="probe preset (its regulariser is toggled per row)")
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="inversion steps (default: the preset's)")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the images")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-record", action="store_true")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for family in ("epsilon", "v_prediction"):
        components = build_tiny_components(seed=0, spec=TinyModelSpec(prediction_type=family))
        images = smooth_images(args.images, 64, args.seed)
        others = smooth_images(args.images, 64, args.seed + 1)  # the reference set R, for d_N
        for regularize in (True, False):
            base = ProbeConfig.from_preset(args.preset, progress=False, control_images=0, keep_seeds=True)
            config = dataclasses.replace(base, inversion=dataclasses.replace(
                base.inversion, num_steps=args.steps or base.inversion.num_steps,
                regularization=dataclasses.replace(base.inversion.regularization, enabled=regularize)))
            reference = probe(cast(components, torch.float64), images.double(), "a shape", reference=others.double(),
                              reference_prompts="a shape", config=config, batch_size=1)
            variants = [(f"float64, chunk {args.images}", torch.float64, None, args.images),
                        ("float32, chunk 1", torch.float32, None, 1),
                        (f"float32, chunk {args.images}", torch.float32, None, args.images),
                        ("UNet bf16, chunk 1", torch.float32, torch.bfloat16, 1)]
            for name, dtype, unet_dtype, chunk in variants:
                with smallest_patch_variance(config.inversion.regularization.patch_size) as variances:
                    result = probe(cast(components, dtype, unet_dtype), images.to(dtype), "a shape",
                                   reference=others.to(dtype), reference_prompts="a shape", config=config,
                                   batch_size=chunk)
                seed_error = (result.erased.seeds.double() - reference.erased.seeds).abs()
                nll = ((result.erased.nll.double() - reference.erased.nll).abs() / reference.erased.nll.abs()).max().item()
                psnr = (result.erased.psnr.double() - reference.erased.psnr).abs().max().item()
                rows.append([family, "on" if regularize else "off", name, f"{seed_error.max().item():.2e}",
                             f"{seed_error.mean().item():.2e}", f"{nll:.2e}", f"{psnr:.2e}",
                             f"{abs(result.d_n - reference.d_n) / abs(reference.d_n):.2e}",
                             f"{min(variances):.1e}" if variances else "-"])
                print(rows[-1], flush=True)

    header = ["model", "regulariser", "variant", "max |seed - fp64|", "mean |seed - fp64|", "max NLL rel. error",
              "max |PSNR - fp64| dB", "d_N rel. error", "smallest patch variance"]
    table = markdown_table(header, rows)
    note = (f"Tiny random-weight models (seed 0), {args.images} smooth images (seed {args.seed}), preset "
            f"{args.preset} ({config.inversion.num_steps} steps), a second set of {args.images} (seed {args.seed + 1}) as R for d_N; each row against the "
            f"same probe in float64 at chunk 1. Patch variance: the smallest over the regulariser's calls in that row.")
    print(table)
    print(note)
    if not args.no_record:
        append_results("precision_sensitivity: eps vs v model, dtype and chunk against float64", f"{table}\n\n{note}")


if __name__ == "__main__":
    main()
