"""Probe cost per preset, side by side in one run: seconds per image and UNet evaluations.

Same model, same images, same seed for every row; only the preset (and the chunk size) change.
Appends its rows with date, commit, device and versions to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/probe_presets.py                    # tiny model, CPU
    .venv/bin/python benchmarks/probe_presets.py --model sd14-shaped --images 1 --presets fast
    .venv/bin/python benchmarks/probe_presets.py --model world --images 16 --presets fast,mofc \
        --batch-sizes 4,16,32 --threads 1                        # CPU chunk sizes on the shipped world
"""

from __future__ import annotations

import argparse
import time

import torch

from unlearn_guard import DiffusionModel, ProbeConfig, probe
from unlearn_guard.probe_batching import auto_batch_size, image_pixels
from unlearn_guard.models.tiny import build_sd14_shaped_components, build_tiny_components
from unlearn_guard.world import load_world_model, make_dataset

from _results import append_results, markdown_table


def build(model_name: str, device: str, dtype: torch.dtype) -> DiffusionModel:
    if model_name == "world":
        return load_world_model().to(device=device, dtype=dtype)
    builder = build_tiny_components if model_name == "tiny" else build_sd14_shaped_components
    model = DiffusionModel.from_components(**builder(seed=0), source=model_name)
    return model.to(device=device, dtype=dtype)


def build_parser() -> argparse.ArgumentParser:
    """The command line (benchmarks/_gpu_run.py checks its steps' flags against it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["tiny", "world", "sd14-shaped"], default="tiny")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--presets", default="mofc,fast,ddim")
    parser.add_argument("--batch-sizes", default="1,4")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (1 when the machine is shared)")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    torch.set_num_threads(args.threads)

    dtype = getattr(torch, args.dtype)
    model = build(args.model, args.device, dtype)
    pixels, _, prompts = make_dataset(args.images, seed=0)  # 32x32 shapes, resized to the model's side
    images = torch.nn.functional.interpolate(pixels.float() / 255, size=model.resolution, mode="bilinear")
    rows = []
    for preset in args.presets.split(","):
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            config = ProbeConfig.from_preset(preset, batch_size=batch_size, progress=False)
            probe(model, images[:1], prompts[:1], config=config)  # warm-up (allocators, lazy init)
            if args.device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            result = probe(model, images, prompts, config=config)
            if args.device == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started
            rows.append({
                "preset": preset,
                "batch": batch_size,
                "images": args.images,
                "s/image": seconds / args.images,
                "UNet evals/image": result.erased.unet_evaluations // args.images,
                "ms/UNet eval": 1000 * seconds / result.erased.unet_evaluations,
                "PSNR mean": float(result.erased.psnr.mean()),
            })

    table = markdown_table(list(rows[0]), [list(row.values()) for row in rows])
    automatic = auto_batch_size(ProbeConfig(), model.device, args.images, image_pixels(images))
    print(table)
    print(f"automatic chunk (batch_size=None) for {args.images} images of this size on {model.device.type}: {automatic}")
    if not args.no_record:
        side = model.resolution // model.vae_scale_factor
        append_results(f"probe_presets: {args.model}, {args.dtype}, latent {model.latent_channels}x{side}x{side}, "
                       f"automatic chunk {automatic}", table, model.device)


if __name__ == "__main__":
    main()
