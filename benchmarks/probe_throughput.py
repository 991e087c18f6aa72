"""Probe throughput, side by side in one run: the released code's way vs torch batched vs fused + bf16.

Variants (same model weights, images, prompts, seed and preset science in every row):
  reference-style   one image at a time, fp32, eager, regularisation through autograd (as MoFC runs it)
  torch batched     all images per chunk, fp32, the PyTorch reference ops
  fused + bf16      bf16 UNet and text encoder, fused Triton ops (backend auto: Triton on CUDA)
  fused + bf16 + compile   the same with the UNet under torch.compile (--compile)
Reports seconds per image, images per second, speedup over reference-style, UNet evaluations
per image, the achieved UNet TFLOP/s (FLOPs of one UNet evaluation counted with
torch.utils.flop_counter) and that as a fraction of the matmul rate measured in the same run
(bf16 on CUDA, fp32 on CPU), and the PSNR/NLL/d_N agreement with the torch batched row.

    .venv/bin/python benchmarks/probe_throughput.py --model sd14-shaped --device cuda --images 16 --compile
    .venv/bin/python benchmarks/probe_throughput.py --model world --device cuda --images 64
    .venv/bin/python benchmarks/probe_throughput.py --model sdxl-shaped --device cuda --images 4 --presets fast --skip-reference-style
    .venv/bin/python benchmarks/probe_throughput.py --model sdxl-tiny --images 4 --presets mofc,fast   # CPU, SDXL code path
    .venv/bin/python benchmarks/probe_throughput.py --model world --images 2 --presets fast   # CPU smoke
"""

from __future__ import annotations

import argparse
import time
import warnings
from contextlib import contextmanager
from typing import Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode

from unlearn_guard import DiffusionModel, ProbeConfig, probe
from unlearn_guard.inversion import renoise
from unlearn_guard.kernels.noise_regularization import noise_regularization_autograd
from unlearn_guard.models.tiny import (build_sd14_shaped_components, build_sdxl_shaped_components,
                                       build_tiny_sdxl_components)
from unlearn_guard.world import load_world_model
from unlearn_guard.world.evaluate import probe_sets

from _results import append_results, markdown_table

# This script measures the inversion's throughput, not the negative control: the control is
# off (control_images=0), which also keeps its images out of the timings, and so is its warning.
warnings.filterwarnings("ignore", message="the negative control is off")


def build(name: str, device: str, dtype: torch.dtype) -> DiffusionModel:
    builders = {"sd14-shaped": build_sd14_shaped_components, "sdxl-tiny": build_tiny_sdxl_components,
                "sdxl-shaped": build_sdxl_shaped_components}
    model = load_world_model() if name == "world" else DiffusionModel.from_components(**builders[name](seed=0), source=name)
    model.to(device=device)
    if dtype != torch.float32:  # the VAE stays fp32: it runs twice per image, the UNet ~350 times
        for module in model.modules():
            if module is not model.vae:
                module.to(dtype)
    return model


@contextmanager
def autograd_regularizer() -> Iterator[None]:
    """Route the probe's regulariser through autograd of the SPEC losses, as the released code does."""
    original = renoise.noise_regularization

    def released(eps, eps_opt, offsets, lambda_kl, lambda_ac, kl_grad_clip, patch_size, backend="torch"):
        return noise_regularization_autograd(eps, eps_opt, offsets, lambda_kl, lambda_ac, kl_grad_clip, patch_size)

    renoise.noise_regularization = released
    try:
        yield
    finally:
        renoise.noise_regularization = original


def unet_flops(model: DiffusionModel) -> int:
    """FLOPs of one UNet evaluation on one latent (batch 1), counted by torch's flop counter."""
    side = model.resolution // model.vae_scale_factor
    latents = torch.zeros(1, model.latent_channels, side, side, device=model.device)
    embeddings = model.encode_prompts([""])
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.predict_noise(latents, 500, embeddings)
    return counter.get_total_flops()


def matmul_rate(device: torch.device, dtype: torch.dtype) -> float:
    """TFLOP/s of a square matmul in `dtype`, measured now (the peak this run compares against)."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    repeats = 20 if device.type == "cuda" else 5
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - started) / 1e12


def build_parser() -> argparse.ArgumentParser:
    """The command line (benchmarks/_gpu_run.py checks its steps' flags against it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["world", "sd14-shaped", "sdxl-tiny", "sdxl-shaped"], default="world",
                        help="sdxl-tiny: the tests' tiny SDXL (64 px); sdxl-shaped: SDXL base, random weights, 1024 px")
    parser.add_argument("--images", type=int, default=4, help="images per set (E and R each)")
    parser.add_argument("--reference-images", type=int, default=2, help="images per set for the slow reference-style row (>= 2)")
    parser.add_argument("--presets", default="mofc,fast")
    parser.add_argument("--batch-size", type=int, default=None, help="chunk size of the batched rows (default: all images)")
    parser.add_argument("--fast-dtype", default="bfloat16", choices=["bfloat16", "float16"])
    parser.add_argument("--fast-backend", default="auto", choices=["auto", "triton", "torch"],
                        help="fused ops of the fast rows; 'triton' on CPU needs TRITON_INTERPRET=1 (agreement check only)")
    parser.add_argument("--compile", action="store_true", help="add the torch.compile row (minutes of compile on CPU)")
    parser.add_argument("--skip-reference-style", action="store_true")
    parser.add_argument("--flops-only", action="store_true",
                        help="count one UNet evaluation's FLOPs, print (and record) them, and stop")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-record", action="store_true")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    fast_dtype = getattr(torch, args.fast_dtype)

    fp32 = build(args.model, args.device, torch.float32)
    flops = unet_flops(fp32)
    if args.flops_only:
        line = f"one UNet evaluation of {args.model} at {fp32.resolution}x{fp32.resolution} images, batch 1: {flops / 1e9:.4g} GFLOP"
        print(line)
        if not args.no_record:
            append_results(f"UNet FLOPs (torch.utils.flop_counter): {args.model}", line, device)
        return
    fast = build(args.model, args.device, fast_dtype)
    erased, erased_prompts, reference, reference_prompts = probe_sets("circle", args.images, 0)
    side = fp32.resolution
    resize = lambda x: torch.nn.functional.interpolate(x.float() / 255, size=side, mode="bilinear")  # noqa: E731
    erased, reference = resize(erased), resize(reference)
    peak = matmul_rate(device, fast_dtype if device.type == "cuda" else torch.float32)

    variants = []
    if not args.skip_reference_style:
        variants.append(("reference-style", fp32, dict(batch_size=1, backend="torch"), True, args.reference_images))
    batch = args.batch_size or args.images
    variants += [
        ("torch batched", fp32, dict(batch_size=batch, backend="torch"), False, args.images),
        (f"fused + {args.fast_dtype}", fast, dict(batch_size=batch, backend=args.fast_backend), False, args.images),
    ]
    if args.compile:
        variants.append((f"fused + {args.fast_dtype} + compile", fast,
                         dict(batch_size=batch, backend=args.fast_backend, compile_unet=True), False, args.images))

    rows = []
    for preset in args.presets.split(","):
        baseline_spi = None
        agreement_base = None
        for name, model, knobs, released, count in variants:
            config = ProbeConfig.from_preset(preset, progress=False, control_images=0, **knobs)
            def run():
                context = autograd_regularizer() if released else _null()
                with context:
                    count_ = max(count, 2)  # d_N needs two images per set
                    return probe(model, erased[:count_], erased_prompts[:count_], reference=reference[:count_],
                                 reference_prompts=reference_prompts[:count_], config=config)
            if not released:
                run()  # warm-up: allocator, kernels' JIT, torch.compile
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            result = run()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - started
            # Probe time of both sets (E and R) over both sets' images; d_N and bootstrap excluded.
            per_image = (result.erased.seconds + result.reference.seconds) / (len(result.erased.images) + len(result.reference.images))
            evals = (result.erased.unet_evaluations + result.reference.unet_evaluations) / (
                len(result.erased.images) + len(result.reference.images))
            tflops = flops * evals / per_image / 1e12
            baseline_spi = baseline_spi or per_image
            if name == "torch batched":
                agreement_base = result
            agreement = ""
            if agreement_base is not None and result is not agreement_base:
                nll = ((result.erased.nll - agreement_base.erased.nll).abs() / agreement_base.erased.nll).max().item()
                psnr = (result.erased.psnr - agreement_base.erased.psnr).abs().max().item()
                agreement = f"NLL {nll:.2%}, PSNR {psnr:.2f} dB, d_N {result.d_n:.3f} vs {agreement_base.d_n:.3f}"
            rows.append([preset, name, len(result.erased.images) + len(result.reference.images), per_image, 1 / per_image,
                         baseline_spi / per_image, int(evals), tflops, tflops / peak, seconds, agreement])

    header = ["preset", "variant", "images", "s/image", "images/s", "speedup", "UNet evals/image", "UNet TFLOP/s",
              "of matmul peak", "wall s", "vs torch batched"]
    table = markdown_table(header, rows)
    fused_ops = {"triton": "Triton" + (" (interpreted)" if device.type == "cpu" else ""), "torch": "PyTorch",
                 "auto": "Triton" if device.type == "cuda" else "PyTorch (backend auto on CPU)"}[args.fast_backend]
    note = (f"UNet FLOPs per evaluation (flop counter, batch 1, {side}x{side} images): {flops / 1e9:.4g} GFLOP; "
            f"matmul peak measured now: {peak:.3g} TFLOP/s ({'bf16' if device.type == 'cuda' else 'fp32'}); "
            f"fused rows ran their ops on {fused_ops}")
    print(table)
    print(note)
    if not args.no_record:
        append_results(f"probe_throughput: {args.model}, presets {args.presets}", f"{table}\n\n{note}", device)


@contextmanager
def _null() -> Iterator[None]:
    yield


if __name__ == "__main__":
    main()
