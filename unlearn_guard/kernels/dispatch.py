"""Backend choice for the fused ops: `"auto" | "triton" | "torch"`.

auto picks Triton when every tensor is on CUDA and Triton imports, the PyTorch reference
otherwise (CPU). Triton on CPU tensors runs only under Triton's interpreter, which reads
`TRITON_INTERPRET=1` when the kernels are *defined*, so it must be set before
`unlearn_guard` is imported (the test suite's conftest does this on machines without CUDA).
"""

from __future__ import annotations

import os
from typing import Literal

import torch

from ..errors import InputError

Backend = Literal["auto", "triton", "torch"]
BACKENDS: tuple[str, ...] = ("auto", "triton", "torch")

try:  # Triton is an optional extra (`pip install unlearn_guard[triton]`); CUDA builds of torch ship it.
    import triton  # noqa: F401
    import triton.language as tl  # noqa: F401

    HAS_TRITON = True
except Exception:  # ImportError, or a broken install that fails at import: either way, no Triton.
    HAS_TRITON = False

# Read once, like Triton itself: the kernels below were defined interpreted or compiled.
INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise InputError(f"backend: got {backend!r}; expected one of {list(BACKENDS)}")


def resolve_backend(backend: str, *tensors: torch.Tensor, op: str) -> Literal["triton", "torch"]:
    """The backend that runs `op` on these tensors; a clear error when Triton was asked for but can't run."""
    check_backend(backend)
    if backend == "torch":
        return "torch"
    on_cuda = all(t.is_cuda for t in tensors)
    if backend == "auto":
        return "triton" if (on_cuda and HAS_TRITON and not INTERPRETING) else "torch"
    if not HAS_TRITON:
        raise InputError(f"{op}: backend='triton' needs the triton package (pip install 'unlearn_guard[triton]')")
    if not on_cuda and not INTERPRETING:
        devices = sorted({str(t.device) for t in tensors})
        raise InputError(
            f"{op}: backend='triton' got tensors on {devices}; Triton runs on CUDA, or on CPU only under "
            "TRITON_INTERPRET=1 set before importing unlearn_guard"
        )
    if on_cuda and INTERPRETING:
        raise InputError(f"{op}: TRITON_INTERPRET=1 is set, so Triton kernels run on CPU tensors only; unset it for CUDA")
    return "triton"


def next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def in_layout_of(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`out` with `like`'s memory layout (strides), copying only when they differ.

    The fused ops return what they were given: a channels_last estimate stays channels_last, so
    the next UNet call sees the same layout (and rounds the same way) as the released code's.
    """
    if out.shape != like.shape or out.stride() == like.stride():
        return out
    return torch.empty_like(like, dtype=out.dtype).copy_(out)
