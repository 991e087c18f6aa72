"""LoRA adapters on the UNet: diffusers, peft and kohya-style (SPM) files.

  - diffusers: `pytorch_lora_weights.safetensors` (a folder or the file), loaded with
    `UNet2DConditionModel.load_lora_adapter`;
  - peft: `adapter_config.json` + `adapter_model.safetensors`, loaded with `peft.PeftModel.from_pretrained`;
  - kohya / sd-webui (`lora_unet_*.lora_down/lora_up/alpha`; SPM ships this way): converted with
    diffusers' own non-diffusers LoRA converter (`StableDiffusionPipeline.lora_state_dict`) and loaded
    like a diffusers LoRA at a fixed scale. SPM's prompt-dependent gating (its latent anchoring
    and facilitated transport) lives in SPM's inference code and is not reproduced: the adapter
    acts on every prompt at that scale.
Every adapter is checked against the UNet before it is loaded, because torch and peft either stop
with a wall of text or, for LoRA keys that match no layer, only log a warning and skip them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import InputError, ModelError
from .adapters import tuner_layers
from .bundle import unwrap_unet
from .state_dicts import first, read_state_dict

PathLike = str | os.PathLike

DIFFUSERS_LORA_FILE = "pytorch_lora_weights.safetensors"
PEFT_CONFIG_FILE = "adapter_config.json"
PEFT_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
KOHYA_UNET_PREFIX = "lora_unet_"
KOHYA_TEXT_PREFIX = "lora_te"


def lora_weight_file(path: Path) -> tuple[str, Path]:
    """('peft' | 'diffusers', weights file) for an adapter folder (or a LoRA file)."""
    if path.is_file():
        return "diffusers", path
    if not path.is_dir():
        raise InputError(f"lora: folder {str(path)!r} does not exist")
    if (path / PEFT_CONFIG_FILE).is_file():
        for name in PEFT_WEIGHT_FILES:
            if (path / name).is_file():
                return "peft", path / name
        raise InputError(f"lora: {str(path)!r} has {PEFT_CONFIG_FILE} but none of {PEFT_WEIGHT_FILES}")
    if (path / DIFFUSERS_LORA_FILE).is_file():
        return "diffusers", path / DIFFUSERS_LORA_FILE
    raise InputError(
        f"lora: folder {str(path)!r} holds neither {DIFFUSERS_LORA_FILE} (diffusers' save_lora_weights) "
        f"nor {PEFT_CONFIG_FILE} + adapter_model.safetensors (peft's save_pretrained)"
    )


def _adapter_layers(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Size]]:
    """{module name: {"A": lora_A shape, "B": lora_B shape}} from peft-style keys."""
    layers: dict[str, dict[str, torch.Size]] = {}
    for key, value in state.items():
        if ".lora_" not in key:
            continue
        module, rest = key.split(".lora_", 1)
        entry = layers.setdefault(module, {})
        if rest in ("A.weight", "B.weight"):
            entry[rest[0]] = value.shape
    return layers


def _check_adapter_fits(unet: torch.nn.Module, layers: dict[str, dict[str, torch.Size]], file: Path) -> None:
    """LoRA factors must sit on existing layers: A (r, in, ...) and B (out, r, ...) vs weight (out, in, ...)."""
    modules = dict(unet.named_modules())
    absent, misshapen = [], []
    for name, shapes in layers.items():
        weight = getattr(modules.get(name), "weight", None)
        if not isinstance(weight, torch.Tensor):
            absent.append(name)
            continue
        a_shape, b_shape = shapes.get("A"), shapes.get("B")
        if (a_shape is not None and a_shape[1] != weight.shape[1]) or (b_shape is not None and b_shape[0] != weight.shape[0]):
            misshapen.append(f"{name}: lora_A {tuple(a_shape or ())}, lora_B {tuple(b_shape or ())} vs layer weight {tuple(weight.shape)}")
    if absent or misshapen:
        lines = [
            f"LoRA adapter {str(file)!r} does not match this UNet: of its {len(layers)} layers, "
            f"{len(absent)} are absent from the UNet and {len(misshapen)} have the wrong shape; "
            "it was trained for another model (or is not a UNet adapter)"
        ]
        if absent:
            lines.append(f"  absent from the UNet: {first(absent)}")
        if misshapen:
            lines.append(f"  wrong shape: {first(misshapen)}")
        raise ModelError("\n".join(lines))


def _count_injected(unet: torch.nn.Module, adapter_name: str) -> int:
    return sum(1 for layer in tuner_layers(unet) if adapter_name in getattr(layer, "lora_A", {}))


def _kohya_state(state: dict[str, torch.Tensor], file: Path) -> tuple[dict[str, torch.Tensor], Any]:
    """A kohya-style LoRA converted by diffusers: ({"unet.<layer>...": tensor}, network alphas)."""
    from diffusers import StableDiffusionPipeline

    text_layers = [k for k in state if k.startswith(KOHYA_TEXT_PREFIX)]
    if text_layers:
        raise ModelError(f"LoRA file {str(file)!r} holds text-encoder LoRA layers (keys such as "
                         f"{first(text_layers, 3)}); only UNet LoRA layers are applied here")
    try:
        converted, alphas = StableDiffusionPipeline.lora_state_dict(dict(state))[:2]
    except Exception as error:  # diffusers raises ValueError for keys it cannot place
        raise ModelError(f"could not convert kohya-style LoRA {str(file)!r} with diffusers: {type(error).__name__}: "
                         f"{' '.join(str(error).split())[:300]}") from None
    return converted, alphas


def load_lora(unet: torch.nn.Module, folder: PathLike, *, adapter_name: str = "erasure",
              scale: float = 1.0) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The UNet with the adapter loaded and active, and what was loaded (format, layers, scale)."""
    from diffusers.utils import convert_unet_state_dict_to_peft
    from peft import PeftModel

    path = Path(folder)
    kind, file = lora_weight_file(path)
    if unwrap_unet(unet) is not unet:
        raise ModelError("lora: the UNet is already wrapped by peft; merge or unload its adapter before adding another")
    if adapter_name in getattr(unet, "peft_config", {}):
        raise ModelError(f"lora: the UNet already has an adapter named {adapter_name!r}; pass another adapter_name")
    state = read_state_dict(file, "lora")
    alphas = None
    if kind == "diffusers" and any(k.startswith((KOHYA_UNET_PREFIX, KOHYA_TEXT_PREFIX)) for k in state):
        kind = "kohya"
        full, alphas = _kohya_state(state, file)
        state = full
    if kind == "peft":
        layers_state = {k.removeprefix("base_model.model."): v for k, v in state.items()}
    else:
        layers_state = {k.removeprefix("unet."): v for k, v in state.items() if k.startswith("unet.")}
        if not layers_state:
            raise ModelError(f"LoRA file {str(file)!r} holds no UNet layers (no key starts with 'unet.' "
                             f"or {KOHYA_UNET_PREFIX!r})")
        if not any(".lora_A." in key for key in layers_state):  # older attention-processor key names
            layers_state = convert_unet_state_dict_to_peft(layers_state)
    layers = _adapter_layers(layers_state)
    if not layers:
        raise ModelError(f"{str(file)!r} holds no LoRA weights (no key contains '.lora_')")
    _check_adapter_fits(unet, layers, file)
    try:
        if kind == "kohya":
            unet.load_lora_adapter(state, network_alphas=alphas, prefix="unet", adapter_name=adapter_name)
            loaded = unet
        elif kind == "diffusers":
            unet.load_lora_adapter(str(file.parent), prefix="unet", adapter_name=adapter_name, weight_name=file.name,
                                   local_files_only=True)
            loaded = unet
        else:
            loaded = PeftModel.from_pretrained(unet, str(path), adapter_name=adapter_name, is_trainable=False)
        if scale != 1.0:
            if kind == "peft":
                raise ModelError("lora_scale: only diffusers and kohya-style adapters take a scale here; "
                                 "peft adapters load at their saved lora_alpha / r")
            loaded.set_adapters([adapter_name], weights=[scale])
    except ModelError:
        raise
    except Exception as error:  # peft's size-mismatch RuntimeError, unsupported configs, ...
        raise ModelError(f"could not load LoRA adapter {str(path)!r}: {type(error).__name__}: "
                         f"{' '.join(str(error).split())[:300]}") from None
    injected = _count_injected(loaded, adapter_name)
    if injected != len(layers):
        raise ModelError(f"LoRA adapter {str(path)!r} holds {len(layers)} layers but only {injected} were injected "
                         "into the UNet; it does not match this model")
    names = {"kohya": "kohya-style LoRA (converted by diffusers)", "diffusers": "diffusers LoRA", "peft": "peft LoRA"}
    notes = ["prompt-dependent gating (SPM) is not reproduced: the adapter acts on every prompt"] if kind == "kohya" else []
    return loaded, {"format": names[kind], "file": file, "layers": len(layers), "scale": scale, "notes": notes}


def load_lora_adapter(unet: torch.nn.Module, folder: PathLike, *, adapter_name: str = "erasure") -> torch.nn.Module:
    """The UNet with the LoRA adapter in `folder` loaded and active (diffusers, peft or kohya format).

    diffusers and kohya formats load into `unet` in place (the same module is returned); peft's
    is wrapped with `peft.PeftModel.from_pretrained` (the wrapper is returned; `DiffusionModel`
    accepts both). Raises ModelError when the adapter's layers do not all exist in this UNet with
    matching shapes, or when fewer LoRA layers were injected than it holds.
    """
    return load_lora(unet, folder, adapter_name=adapter_name)[0]
