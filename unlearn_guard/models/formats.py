"""What a weight file is, and its tensors under the model's own key names.

Erasure methods ship their weights in many layouts; `unet_parts` and `text_encoder_parts` detect
the layout from the keys and return the tensors under diffusers / transformers names, converted
with the libraries' own converters (never a key table of ours):
  - diffusers UNet names, full or partial (ESD-x: attn2; ESD-u: all but attn2; UCE: attn2 to_k/to_v),
    flat or nested (`{"unet": {...}, "text_encoder": {...}}`, `{"unet.x.attn2.to_k": {"weight": t}}`);
  - CompVis / ldm names (`model.diffusion_model.*`, `cond_stage_model.*`, `first_stage_model.*`),
    whole or partial (concept ablation's `delta_*.ckpt`), converted by
    `diffusers.loaders.single_file_utils.convert_ldm_unet_checkpoint` / `convert_ldm_clip_checkpoint`;
  - a text encoder state dict (`text_encoder.text_model.*`, `text_model.*`).
Formats that cannot be probed as weights are refused by name (Receler's erasers, LoRA files given
as full weights), and keys that match nothing are named.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import ModelError, StateDictMismatchError
from .state_dicts import first

LDM_UNET_PREFIX = "model.diffusion_model."
LDM_VAE_PREFIX = "first_stage_model."
LDM_TEXT_PREFIX = "cond_stage_model."
LDM_EMA_PREFIX = "model_ema."
LDM_PREFIXES = (LDM_UNET_PREFIX, LDM_VAE_PREFIX, LDM_TEXT_PREFIX, LDM_EMA_PREFIX)
# LatentDiffusion registers its noise schedule as buffers; the schedule comes from the base
# model's scheduler config instead (SPEC 1), so these are read past, and said so.
LDM_SCHEDULE_BUFFERS = frozenset({
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
    "logvar", "lvlb_weights",
})
MAX_UNKNOWN = 5
_LORA_MARKS = (".lora_A.", ".lora_B.", ".lora.down.", ".lora.up.", "lora_linear_layer", ".lora_down.", ".lora_up.")
# Receler (Huang et al. 2024) saves {"down_blocks.0.attentions.0": {"down.weight", ...}} beside
# eraser_config.json: adapter modules after each cross-attention, which need Receler's forward code.
_RECELER_KEY = re.compile(r"(^|\.)(attentions\.\d+|attn2)\.(adapter\.)?(down|up)\.(weight|bias)$")


@dataclass
class Parts:
    """A file's tensors sorted by the part of the model they belong to, under that part's names."""

    format: str
    unet: dict[str, torch.Tensor] = field(default_factory=dict)
    text_encoder: dict[str, torch.Tensor] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _refuse_receler(state: Mapping[str, torch.Tensor], file: Path) -> None:
    eraser_keys = [k for k in state if "eraser" in k.lower() or ".adapter." in k or _RECELER_KEY.search(k)]
    if (file.parent / "eraser_config.json").is_file() or eraser_keys:
        shown = f" (keys such as {first(eraser_keys, 3)})" if eraser_keys else " (eraser_config.json beside it)"
        raise ModelError(
            f"weights file {str(file)!r} looks like a Receler eraser{shown}: Receler adds new adapter modules "
            "after each cross-attention that need its own forward code, so it cannot be loaded into a diffusers "
            "UNet and probed; gate a method that changes the model's own weights (see docs/checkpoints.md)")


def _refuse_lora(state: Mapping[str, torch.Tensor], file: Path, argument: str) -> None:
    lora_keys = [k for k in state if any(mark in k for mark in _LORA_MARKS) or k.startswith(("lora_unet_", "lora_te_"))]
    if lora_keys:
        kind = "a kohya-style LoRA" if any(k.startswith(("lora_unet_", "lora_te_")) for k in lora_keys) else "a LoRA"
        raise ModelError(f"{argument}: {str(file)!r} holds {kind} (keys such as {first(lora_keys, 3)}), not weights; "
                         "pass it as --lora (lora=...) instead")


def _unknown_error(file: Path, unknown: list[str], looks_like: str, part: str) -> StateDictMismatchError:
    return StateDictMismatchError(
        f"weights file {str(file)!r} looks like {looks_like}, but {len(unknown)} of its keys match nothing in the "
        f"{part}: {first(unknown, MAX_UNKNOWN)}; expected keys of the base model's {part} (diffusers or ldm names)")


def _pad_blocks(keys: list[str]) -> dict[str, str]:
    """ldm key -> itself, plus one placeholder per block index below the highest one present.

    diffusers' converter counts the `input_blocks.N` / `middle_block.N` / `output_blocks.N` indices
    that are present and walks 0..count-1, so a partial file (attn2 of blocks 1, 2, 4, ...) would be
    walked short. A placeholder per missing index makes the walk complete; placeholders match none
    of the converter's patterns (`.0.`, `.1.`, `.op.`, `.conv.`) and come back out under no name.
    """
    names = {key: key for key in keys}
    for block in ("input_blocks", "middle_block", "output_blocks"):
        found = [int(m.group(1)) for k in keys if (m := re.match(rf"{block}\.(\d+)\.", k))]
        for index in range(max(found) + 1 if found else 0):
            names.setdefault(f"{block}.{index}.placeholder", "")
    return names


def convert_ldm_unet_names(ldm_keys: list[str], config: Any) -> dict[str, str]:
    """{diffusers name: ldm name} of the given UNet keys (without `model.diffusion_model.`).

    The key *names* go through diffusers' `convert_ldm_unet_checkpoint` (it only moves values, so
    names stand in for tensors): whole checkpoints and partial deltas take the same path.
    """
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    padded = {LDM_UNET_PREFIX + k: v for k, v in _pad_blocks(ldm_keys).items()}
    converted = convert_ldm_unet_checkpoint(padded, dict(config))
    return {name: ldm for name, ldm in converted.items() if ldm}


def _ldm_parts(state: Mapping[str, torch.Tensor], file: Path, unet: torch.nn.Module,
               text_encoder: torch.nn.Module | None) -> Parts:
    """A whole LatentDiffusion state dict or a partial ldm delta, converted by diffusers."""
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint

    unet_keys = [k.removeprefix(LDM_UNET_PREFIX) for k in state if k.startswith(LDM_UNET_PREFIX)]
    names = convert_ldm_unet_names(unet_keys, unet.config)
    taken = {LDM_UNET_PREFIX + ldm for ldm in names.values()}
    parts = Parts(format="ldm", unet={name: state[LDM_UNET_PREFIX + ldm] for name, ldm in names.items()})
    text_keys = {k: v for k, v in state.items() if k.startswith(LDM_TEXT_PREFIX) and not k.endswith("position_ids")}
    clip = convert_ldm_clip_checkpoint(text_keys)
    if text_keys and not clip:
        parts.notes.append(f"{len(text_keys)} cond_stage_model tensors ignored (not a CLIP text model diffusers converts)")
    elif clip and text_encoder is None:
        parts.notes.append(f"{len(clip)} cond_stage_model (text encoder) tensors ignored: no text encoder given")
    elif clip:
        parts.text_encoder, te_unknown = text_encoder_names(clip, set(text_encoder.state_dict()))
        if te_unknown:
            raise _unknown_error(file, [LDM_TEXT_PREFIX + "transformer." + k for k in te_unknown],
                                 "an ldm (CompVis) checkpoint", "text encoder")
    vae = [k for k in state if k.startswith(LDM_VAE_PREFIX)]
    ema = [k for k in state if k.startswith(LDM_EMA_PREFIX)]
    schedule = [k for k in state if k in LDM_SCHEDULE_BUFFERS]
    if vae:
        parts.notes.append(f"{len(vae)} first_stage_model (VAE) tensors ignored: the VAE is the base model's")
    if ema:
        parts.notes.append(f"{len(ema)} model_ema tensors ignored: the non-EMA UNet was taken")
    if schedule:
        parts.notes.append(f"{len(schedule)} noise-schedule buffers ignored: the schedule is the base model's")
    known = taken | set(text_keys) | set(vae) | set(ema) | set(schedule) | {k for k in state if k.endswith("position_ids")}
    unknown = [k for k in state if k not in known]
    if unknown:
        raise _unknown_error(file, unknown, "an ldm (CompVis) checkpoint", "UNet")
    whole = len(names) == len(unet.state_dict())
    parts.format = "ldm checkpoint" if whole or parts.text_encoder or vae else "partial ldm delta"
    return parts


def text_encoder_names(state: Mapping[str, torch.Tensor], model_keys: set[str]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Text-encoder tensors under the model's names, and the keys that matched nothing.

    transformers >= 5.6 dropped CLIPTextModel's `text_model.` level from its state dict, older
    versions keep it; files keep whatever their writer had. A key is tried as it is, without
    `text_model.` and with it.
    """
    found: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        for name in (key, key.removeprefix("text_model."), "text_model." + key):
            if name in model_keys:
                found[name] = value
                break
        else:
            if not key.endswith("position_ids"):  # a buffer older CLIP files stored; not a weight
                unknown.append(key)
    return found, unknown


def unet_parts(state: Mapping[str, torch.Tensor], file: Path, unet: torch.nn.Module,
               text_encoder: torch.nn.Module | None, argument: str = "unet_weights") -> Parts:
    """Detect the layout of a file given as UNet weights and sort its tensors (see the module docstring)."""
    _refuse_receler(state, file)
    _refuse_lora(state, file, argument)
    if any(k.startswith(LDM_PREFIXES) for k in state):
        return _ldm_parts(state, file, unet, text_encoder)
    unet_keys = set(unet.state_dict())
    parts = Parts(format="diffusers UNet")
    te_state = {k.removeprefix("text_encoder."): v for k, v in state.items() if k.startswith("text_encoder.")}
    unknown: list[str] = []
    for key, value in state.items():
        if key.startswith("text_encoder."):
            continue
        name = key.removeprefix("unet.")
        if name in unet_keys:
            parts.unet[name] = value
        else:
            unknown.append(key)
    if te_state:
        model_keys = set(text_encoder.state_dict()) if text_encoder is not None else set()
        parts.text_encoder, te_unknown = text_encoder_names(te_state, model_keys)
        unknown += ["text_encoder." + k for k in te_unknown]
        parts.format = "diffusers UNet + text encoder"
    if any(k.startswith("unet.") for k in state):
        parts.format += " (nested under unet.)"
    if unknown:
        looks = "a diffusers UNet state dict" if parts.unet else "no weight layout this loader knows"
        raise _unknown_error(file, unknown, looks, "UNet" if not te_state else "UNet or text encoder")
    return parts


def text_encoder_parts(state: Mapping[str, torch.Tensor], file: Path, text_encoder: torch.nn.Module) -> Parts:
    """A text-encoder state dict file (`text_encoder.text_model.*`, `text_model.*` or ldm names)."""
    _refuse_lora(state, file, "text_encoder")
    parts = Parts(format="text encoder state dict")
    if any(k.startswith(LDM_TEXT_PREFIX) for k in state):
        from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint

        others = [k for k in state if not k.startswith(LDM_TEXT_PREFIX)]
        if others:
            raise _unknown_error(file, others, "an ldm text encoder (cond_stage_model.*)", "text encoder")
        state = convert_ldm_clip_checkpoint({k: v for k, v in state.items() if not k.endswith("position_ids")})
        parts.format = "ldm text encoder (cond_stage_model)"
    sidecar = [k for k in state if k.startswith("embedding.")]
    body = {k.removeprefix("text_encoder."): v for k, v in state.items() if not k.startswith("embedding.")}
    parts.text_encoder, unknown = text_encoder_names(body, set(text_encoder.state_dict()))
    if sidecar:
        parts.notes.append(f"{len(sidecar)} embedding.* tensors ignored (not part of CLIPTextModel)")
    if unknown:
        raise _unknown_error(file, unknown, "a text encoder state dict", "text encoder")
    return parts


def subset_name(replaced: list[str], total: int) -> str | None:
    """A recognisable name for which UNet tensors a file replaced, or None when it is no known subset."""
    if not replaced:
        return None
    if len(replaced) == total:
        return "all"
    if all(re.search(r"\.attn2\.to_[kv]\.", k) for k in replaced):
        return "attn2 to_k/to_v only"
    if all(".attn2." in k for k in replaced):
        return "attn2 only"
    if not any(".attn2." in k for k in replaced):
        return "all but attn2"
    return None
