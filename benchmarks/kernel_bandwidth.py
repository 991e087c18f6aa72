"""Each fused kernel against its PyTorch reference (and the regulariser against autograd), side by side.

Per op and batch size: median milliseconds, per-image milliseconds, speedup over the baseline,
effective GB/s (the op's minimal traffic: every input read once, every output written once)
and that as a fraction of the device-to-device copy bandwidth measured in the same run, plus
the largest difference from the float64 reference. Appends its table to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/kernel_bandwidth.py                       # on a CUDA machine: SD 1.x shapes
    TRITON_INTERPRET=1 .venv/bin/python benchmarks/kernel_bandwidth.py --batches 2 --repeats 1 --no-record
                                                                 # CPU: interpreter, correctness only
On CPU the Triton rows run interpreted: their times say nothing about a GPU and are marked.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from unlearn_guard.kernels.dispatch import INTERPRETING
from unlearn_guard.kernels.noise_regularization import (
    draw_roll_offsets,
    noise_regularization_autograd,
    noise_regularization_torch,
    noise_regularization_triton,
)
from unlearn_guard.kernels.renoise_update import inverse_step_coefficients, renoise_update_torch, renoise_update_triton
from unlearn_guard.kernels.seed_statistics import (
    squared_error_torch,
    squared_error_triton,
    sum_of_squares_torch,
    sum_of_squares_triton,
)

from _results import append_results, markdown_table


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median wall milliseconds of fn() over `repeats` runs, synchronising the device around each."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        samples.append(1000 * (time.perf_counter() - started))
    return statistics.median(samples)


def copy_bandwidth(device: torch.device, megabytes: int, repeats: int) -> float:
    """GB/s of dst.copy_(src) (read + write counted) on a buffer of `megabytes`."""
    src = torch.empty(megabytes * 2**20 // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    ms = timed(lambda: dst.copy_(src), device, max(repeats, 3))
    return 2 * src.numel() * 4 / (ms / 1000) / 1e9


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double().cpu() - b.double().cpu()).abs().max())


def build_parser() -> argparse.ArgumentParser:
    """The command line (benchmarks/_gpu_run.py checks its steps' flags against it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,16,64", help="images per launch")
    parser.add_argument("--latent", default="4,64,64", help="C,H,W of one latent (SD 1.x: 4,64,64)")
    parser.add_argument("--image-side", type=int, default=512, help="pixel side for the PSNR reduction")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"],
                        help="dtype of the UNet outputs fed to the ops (the bf16 fast path)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--autograd-max-batch", type=int, default=16, help="skip the slow autograd baseline above this")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-record", action="store_true")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    channels, height, width = (int(v) for v in args.latent.split(","))
    interpreted = " (interpreted)" if INTERPRETING else ""

    bandwidth = copy_bandwidth(device, 256 if device.type == "cuda" else 32, args.repeats)
    rows = []

    def add(op: str, batch: int, variant: str, ms: float, baseline_ms: float | None, traffic: int, diff: float) -> None:
        gbps = traffic / (ms / 1000) / 1e9
        rows.append([op, batch, variant, ms, ms / batch, (baseline_ms / ms) if baseline_ms else 1.0, gbps,
                     gbps / bandwidth, f"{diff:.1e}"])

    for batch in (int(b) for b in args.batches.split(",")):
        shape = (batch, channels, height, width)
        generator = torch.Generator().manual_seed(batch)
        eps = torch.randn(shape, generator=generator).to(device, dtype)
        eps_opt = torch.randn(shape, generator=generator).to(device, dtype)
        offsets = draw_roll_offsets([torch.Generator().manual_seed(i) for i in range(batch)], 4, 5, *shape[1:]).to(device)
        elem = torch.finfo(dtype).bits // 8
        n = eps.numel()

        # 1. noise regularisation: autograd (released code) vs closed-form torch vs fused Triton.
        exact = noise_regularization_torch(eps.double(), eps_opt.double(), offsets)
        traffic = 3 * n * elem
        ms_torch = timed(lambda: noise_regularization_torch(eps.float(), eps_opt.float(), offsets), device, args.repeats)
        baseline = None
        if batch <= args.autograd_max_batch:
            baseline = timed(lambda: noise_regularization_autograd(eps.float(), eps_opt.float(), offsets), device,
                             max(1, args.repeats // 5))
            add("noise_regularization", batch, "autograd (released)", baseline, baseline, traffic,
                _max_diff(noise_regularization_autograd(eps.float(), eps_opt.float(), offsets), exact))
        add("noise_regularization", batch, "torch closed form", ms_torch, baseline, traffic,
            _max_diff(noise_regularization_torch(eps.float(), eps_opt.float(), offsets), exact))
        ms = timed(lambda: noise_regularization_triton(eps, eps_opt, offsets), device, args.repeats)
        add("noise_regularization", batch, "triton fused" + interpreted, ms, baseline or ms_torch, traffic,
            _max_diff(noise_regularization_triton(eps, eps_opt, offsets), exact))

        # 2. ReNoise update with CFG, running mean and step: 4 reads (z fp32, 2 UNet outputs, avg fp32), 3 fp32 writes.
        z = torch.randn(shape, generator=generator).to(device)
        avg = torch.randn(shape, generator=generator).to(device)
        coefficients = inverse_step_coefficients(0.5, 0.7)
        arguments = (z, eps, eps_opt, 7.5, avg, 3, coefficients)
        exact_update = renoise_update_torch(*(a.double() if isinstance(a, torch.Tensor) else a for a in arguments))
        traffic = (2 * 4 + 2 * elem + 3 * 4) * n
        ms_torch = timed(lambda: renoise_update_torch(*arguments), device, args.repeats)
        add("renoise_update", batch, "torch", ms_torch, ms_torch, traffic, _max_diff(renoise_update_torch(*arguments).z_next, exact_update.z_next))
        ms = timed(lambda: renoise_update_triton(*arguments), device, args.repeats)
        add("renoise_update", batch, "triton fused" + interpreted, ms, ms_torch, traffic,
            _max_diff(renoise_update_triton(*arguments).z_next, exact_update.z_next))

        # 3. Seed NLL reduction (sum of squares) and the PSNR squared error on decoded images.
        exact_ss = sum_of_squares_torch(eps.double())
        ms_torch = timed(lambda: sum_of_squares_torch(eps), device, args.repeats)
        add("sum_of_squares", batch, "torch (float64)", ms_torch, ms_torch, n * elem, _max_diff(sum_of_squares_torch(eps), exact_ss))
        ms = timed(lambda: sum_of_squares_triton(eps), device, args.repeats)
        add("sum_of_squares", batch, "triton fused" + interpreted, ms, ms_torch, n * elem, _max_diff(sum_of_squares_triton(eps), exact_ss))
        pixels = (batch, 3, args.image_side, args.image_side)
        recon = torch.rand(pixels, generator=generator).to(device)
        target = torch.rand(pixels, generator=generator).to(device)
        exact_se = squared_error_torch(recon.double(), target.double())
        traffic = 2 * recon.numel() * 4
        ms_torch = timed(lambda: squared_error_torch(recon, target), device, args.repeats)
        add("squared_error", batch, "torch (float64)", ms_torch, ms_torch, traffic, _max_diff(squared_error_torch(recon, target), exact_se))
        ms = timed(lambda: squared_error_triton(recon, target), device, args.repeats)
        add("squared_error", batch, "triton fused" + interpreted, ms, ms_torch, traffic, _max_diff(squared_error_triton(recon, target), exact_se))

    header = ["op", "batch", "variant", "ms", "ms/image", "speedup", "GB/s", "of copy BW", "max |diff| vs fp64"]
    table = markdown_table(header, rows)
    note = f"copy bandwidth measured in this run: {bandwidth:.1f} GB/s; inputs {args.dtype}, latent {args.latent}"
    print(table)
    print(note)
    if not args.no_record:
        append_results(f"kernels: latent {args.latent}, {args.dtype}{interpreted}", f"{table}\n\n{note}", device)


if __name__ == "__main__":
    main()
