"""Checks on the model that `probe` runs before any compute: finite weights, prompt lengths.

  - `non_finite_tensors` / `check_finite_weights`: NaN or Inf in the weights themselves (a LoRA
    or fine-tune that diverged, an fp16 overflow) is named as the weights' fault, by tensor name,
    before any inversion; otherwise it would surface as "NaN in the latent of every image at t=1",
    which blames the images. One pass over the tensors and one host sync per device: a per-tensor
    `isfinite().all()` stays on the device and all flags come back in a single `.tolist()`.
    The loaders call `non_finite_tensors` on each weights file they read, naming file and tensor.
  - `warn_long_prompts`: prompts longer than the tokenizer's limit are cut by `encode_prompts`
    (CLIP: 77 tokens); one warning per probe gives their count and the limit.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterable, Mapping, Sequence

import torch

from ..errors import NonFiniteWeightsError
from .bundle import DiffusionModel

MAX_LISTED = 5  # tensors or prompts quoted in one message


def non_finite_tensors(named: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the floating-point tensors that hold NaN or Inf, in the order given.

    Integer tensors and tensors without data (meta device) are skipped. One host sync per device.
    """
    names_by_device: dict[torch.device, list[str]] = {}
    flags_by_device: dict[torch.device, list[torch.Tensor]] = {}
    order: dict[str, int] = {}
    for name, tensor in named:
        if not (tensor.is_floating_point() or tensor.is_complex()) or tensor.is_meta or name in order:
            continue
        order[name] = len(order)
        names_by_device.setdefault(tensor.device, []).append(name)
        flags_by_device.setdefault(tensor.device, []).append(torch.isfinite(tensor.detach()).all())
    bad: list[str] = []
    for device, flags in flags_by_device.items():
        finite = torch.stack(flags).tolist()  # the one sync for this device
        bad += [name for name, ok in zip(names_by_device[device], finite) if not ok]
    return sorted(bad, key=order.__getitem__)


def listing(names: Sequence[str], limit: int = MAX_LISTED) -> str:
    shown = ", ".join(repr(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_finite_weights(model: DiffusionModel) -> None:
    """Raise NonFiniteWeightsError naming every part and tensor of `model` that holds NaN or Inf.

    Parameters and floating-point buffers of the UNet (with any peft adapter injected: the LoRA
    parameter's own name, e.g. `...to_k.lora_A.erasure.weight`), the VAE and the text encoder.
    """
    named: list[tuple[str, torch.Tensor]] = []
    for part, module in (("unet", model.unet), ("vae", model.vae), ("text_encoder", model.text_encoder)):
        named += [(f"{part}.{name}", tensor) for name, tensor in module.named_parameters()]
        named += [(f"{part}.{name}", tensor) for name, tensor in module.named_buffers()]
    bad = non_finite_tensors(named)
    if bad:
        raise NonFiniteWeightsError(
            f"the model's weights hold NaN or Inf in {len(bad)} tensor(s): {listing(bad)}; the weights are at "
            "fault, not the images (a LoRA or fine-tune that diverged, or an fp16 overflow), so nothing was "
            "inverted. Expected finite weights"
        )


def token_counts(tokenizer, prompts: Sequence[str]) -> list[int]:
    """Tokens per prompt as the text encoder would see them uncut (special tokens included)."""
    unique = sorted(set(prompts))
    ids = tokenizer(unique, truncation=False, verbose=False)["input_ids"]
    lengths = {prompt: len(tokens) for prompt, tokens in zip(unique, ids)}
    return [lengths[prompt] for prompt in prompts]


def warn_long_prompts(model: DiffusionModel, sets: Mapping[str, Any], stacklevel: int = 3) -> int:
    """Warn once when prompts exceed the tokenizer's limit (they are cut to it); returns how many do.

    Args:
        sets: {label: image set or None}, e.g. {"images": erased, "reference": reference}; each set
            has `.names` and `.prompts` (an `ImageSet`).
    """
    limit = getattr(model.tokenizer, "model_max_length", None)
    if not isinstance(limit, int) or limit <= 0 or limit > 1_000_000:  # "no limit" is a huge sentinel
        return 0
    cut: list[str] = []
    total = 0
    for label, image_set in sets.items():
        if image_set is None:
            continue
        total += len(image_set.prompts)
        for name, count in zip(image_set.names, token_counts(model.tokenizer, image_set.prompts)):
            if count > limit:
                cut.append(f"{label} {name} ({count} tokens)")
    if cut:
        shown = ", ".join(cut[:MAX_LISTED]) + (f" and {len(cut) - MAX_LISTED} more" if len(cut) > MAX_LISTED else "")
        warnings.warn(
            f"prompts: {len(cut)} of {total} prompts are longer than the tokenizer's limit of {limit} tokens and are "
            f"cut to it (the text encoder sees only their first {limit} tokens): {shown}",
            UserWarning,
            stacklevel=stacklevel,
        )
    return len(cut)
