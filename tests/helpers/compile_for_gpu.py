"""Compile every Triton kernel of unlearn_guard for a CUDA architecture, without a GPU.

Run as a script (TRITON_INTERPRET must be unset): `python compile_for_gpu.py 90` compiles the
kernels for sm_90 (Hopper) with SD 1.x shapes, bf16 and fp32, and prints one JSON line per
kernel: its name, the PTX size, bar.sync count and local-memory (spill) instructions.
Triton's front end, its MLIR passes and ptxas all run here; only the launch needs a device.
"""

from __future__ import annotations

import json
import re
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from unlearn_guard.kernels import noise_regularization as nr
from unlearn_guard.kernels import renoise_update as ru
from unlearn_guard.kernels import seed_statistics as ss


def _compile(fn, types: dict[str, str], constants: dict[str, object], arch: int, num_warps: int):
    signature = {name: types.get(name, "constexpr") for name in fn.arg_names}
    constexprs = {(fn.arg_names.index(k),): v for k, v in constants.items()}
    source = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})


def main(arch: int) -> None:
    for dtype in ("bf16", "fp32"):
        cases = {
            "noise_regularization": (
                nr._noise_regularization_kernel,
                {"eps_ptr": f"*{dtype}", "eps_opt_ptr": f"*{dtype}", "offsets_ptr": "*i32", "work_ptr": "*fp32",
                 "scratch_ptr": "*fp32", "out_ptr": f"*{dtype}", "lambda_kl": "fp32", "lambda_ac_per_roll": "fp32",
                 "kl_grad_clip": "fp32"},
                dict(OUTER=4, ROLLS=5, C=4, H=64, W=64, LEVELS=4, P=4, DO_KL=True, DO_AC=True, **nr._tile_sizes(4, 64, 64, 4)),
                8,
            ),
            "renoise_update": (
                ru._renoise_update_kernel,
                {"z_ptr": "*fp32", "cond_ptr": f"*{dtype}", "uncond_ptr": f"*{dtype}", "avg_in_ptr": "*fp32",
                 "eps_out_ptr": "*fp32", "avg_out_ptr": "*fp32", "z_out_ptr": "*fp32", "numel": "i32",
                 "guidance_scale": "fp32", "avg_index": "fp32", "coef_z": "fp32", "coef_eps": "fp32"},
                dict(HAS_UNCOND=True, WRITE_EPS=True, READ_AVG=True, WRITE_AVG=True, STEP=True, BLOCK=1024),
                4,
            ),
            "sum_of_squares": (
                ss._sum_of_squares_kernel,
                {"x_ptr": f"*{dtype}", "partial_ptr": "*fp32", "per_image": "i32", "chunks": "i32"},
                dict(BLOCK=4096),
                8,
            ),
            "squared_error": (
                ss._squared_error_kernel,
                {"x_ptr": f"*{dtype}", "y_ptr": f"*{dtype}", "partial_ptr": "*fp32", "per_image": "i32", "chunks": "i32"},
                dict(QUANTIZE=True, BLOCK=4096),
                8,
            ),
        }  # fmt: skip
        for name, (fn, types, constants, warps) in cases.items():
            compiled = _compile(fn, types, constants, arch, warps)
            ptx = compiled.asm["ptx"]
            print(json.dumps({
                "kernel": name, "dtype": dtype, "arch": arch, "ptx_bytes": len(ptx), "cubin_bytes": len(compiled.asm["cubin"]),
                "bar_sync": ptx.count("bar.sync"), "local_memory": len(re.findall(r"(ld|st)\.local", ptx)),
            }))  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 90)
