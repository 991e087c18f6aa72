"""Leave the model as it was found: train/eval flags, requires_grad and weights.

The probe runs inside a training loop (callbacks) on the very modules being trained, so it must
switch them to eval mode and give back exactly the flags it found, including mixed ones (a frozen
text encoder in eval mode beside a UNet in training, dropout layers toggled one by one).
`snapshot_module_state` lets tests prove that nothing else changed.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch


@contextmanager
def preserve_module_state(*modules: torch.nn.Module) -> Iterator[None]:
    """Put `modules` in eval mode for the body; restore every submodule's `.training` and every
    parameter's `requires_grad` exactly on exit, also when the body raises."""
    training = [(module, module.training) for root in modules for module in root.modules()]
    requires_grad = [(param, param.requires_grad) for root in modules for param in root.parameters()]
    try:
        for root in modules:
            root.eval()
        yield
    finally:
        # Set flags one by one: module.train(flag) would overwrite the children's own flags.
        for module, flag in training:
            module.training = flag
        for param, flag in requires_grad:
            param.requires_grad_(flag)


@dataclass(frozen=True)
class ModuleSnapshot:
    """Flags and exact weight fingerprints of some modules; compare two snapshots with ==.

    Names are prefixed with the module's position in the call (`0.conv_in.weight`).
    """

    training: tuple[tuple[str, bool], ...]
    requires_grad: tuple[tuple[str, bool], ...]
    # (name, dtype, shape, device, blake2b digest of the raw bytes) per parameter and buffer
    tensors: tuple[tuple[str, str, tuple[int, ...], str, str], ...]

    def differences(self, other: "ModuleSnapshot") -> list[str]:
        """Names of the entries that differ from `other` (for readable test failures)."""
        found = []
        for field in ("training", "requires_grad", "tensors"):
            mine, theirs = dict((e[0], e[1:]) for e in getattr(self, field)), dict((e[0], e[1:]) for e in getattr(other, field))
            found += [f"{field}: {name}" for name in sorted(mine.keys() | theirs.keys()) if mine.get(name) != theirs.get(name)]
        return found


def _digest(tensor: torch.Tensor) -> str:
    # Hashing the bytes is exact for any dtype (bf16 included) and costs one copy to the host:
    # about 1 s per GB, so a few seconds for SD 1.4, milliseconds for the tiny test models.
    raw = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
    return hashlib.blake2b(raw.numpy().tobytes(), digest_size=16).hexdigest()


def snapshot_module_state(*modules: torch.nn.Module) -> ModuleSnapshot:
    """Training flags, requires_grad flags and byte-exact weight fingerprints of `modules`."""
    training, requires_grad, tensors = [], [], []
    for index, root in enumerate(modules):
        training += [(f"{index}.{name}", module.training) for name, module in root.named_modules()]
        for name, param in root.named_parameters():
            requires_grad.append((f"{index}.{name}", param.requires_grad))
        for name, tensor in list(root.named_parameters()) + list(root.named_buffers()):
            tensors.append(
                (f"{index}.{name}", str(tensor.dtype), tuple(tensor.shape), str(tensor.device), _digest(tensor))
            )
    return ModuleSnapshot(tuple(training), tuple(requires_grad), tuple(tensors))
