"""Test-only: diffusers key names -> original Stable Diffusion (ldm) key names, for the tiny model.

The library never maps keys by hand: it converts ldm files with diffusers' own converters
(`diffusers.loaders.single_file_utils`). The tests need files in the ldm layout to feed it, and
this reverse map writes them; `tests/test_checkpoint_formats.py` checks it by a round trip through
diffusers' converters (every key maps back to itself), so a mistake here cannot go unnoticed.
"""

from __future__ import annotations

import re
from typing import Any

import torch

LDM_UNET = "model.diffusion_model."
LDM_VAE = "first_stage_model."
LDM_TEXT = "cond_stage_model.transformer."

_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
           ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}


def _resnet(rest: str) -> str:
    for new, old in _RESNET:
        rest = rest.replace(new, old)
    return rest


def unet_key_to_ldm(key: str, config: Any) -> str:
    """One UNet key (diffusers) -> its ldm name, without the `model.diffusion_model.` prefix."""
    per = config["layers_per_block"] + 1  # ldm counts the downsampler (or upsampler) as a layer
    for new, old in _UNET_TOP.items():
        if key.startswith(new + "."):
            return old + key[len(new):]
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = 1 + block * per + layer
        return f"input_blocks.{index}.0.{_resnet(rest)}" if kind == "resnets" else f"input_blocks.{index}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{(int(m[1]) + 1) * per}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = block * per + layer
        return f"output_blocks.{index}.0.{_resnet(rest)}" if kind == "resnets" else f"output_blocks.{index}.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        block = int(m[1])
        has_attention = "CrossAttn" in config["up_block_types"][block]
        return f"output_blocks.{block * per + per - 1}.{2 if has_attention else 1}.conv.{m[2]}"
    raise KeyError(f"no ldm name for UNet key {key!r}")


def unet_to_ldm(state: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    return {LDM_UNET + unet_key_to_ldm(key, config): value for key, value in state.items()}


_VAE_ATTENTION = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))


def _vae_key_to_ldm(key: str, config: Any) -> str:
    blocks = len(config["up_block_types"])
    key = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{m[3]}"
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        return f"decoder.up.{blocks - 1 - int(m[1])}.block.{m[2]}.{m[3]}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        return f"decoder.up.{blocks - 1 - int(m[1])}.upsample.conv.{m[2]}"
    if m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
    if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", key):
        rest = m[2]
        for new, old in _VAE_ATTENTION:
            rest = rest.replace(new, old)
        return f"{m[1]}.mid.attn_1.{rest}"
    return key  # conv_in, conv_out, norm_out, quant_conv, post_quant_conv keep their names


def vae_to_ldm(state: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """ldm's VAE attention projections are 1x1 convolutions: linear weights gain two axes."""
    out = {}
    for key, value in state.items():
        name = _vae_key_to_ldm(key, config)
        if ".mid.attn_1." in name and name.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]
        out[LDM_VAE + name] = value
    return out


def text_encoder_to_ldm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers >= 5.6 dropped CLIPTextModel's `text_model.` level; ldm files keep it."""
    return {LDM_TEXT + (key if key.startswith("text_model.") else "text_model." + key): value
            for key, value in state.items()}


def pipeline_to_ldm(unet: Any, vae: Any, text_encoder: Any) -> dict[str, torch.Tensor]:
    """A whole tiny SD as one LatentDiffusion state dict (UNet + VAE + text encoder)."""
    return {**unet_to_ldm(unet.state_dict(), unet.config), **vae_to_ldm(vae.state_dict(), vae.config),
            **text_encoder_to_ldm(text_encoder.state_dict())}


# ----------------------------------------------------------------------------- SDXL (Stability's sgm layout)
SGM_TEXT = "conditioner.embedders.0.transformer."
SGM_OPEN_CLIP = "conditioner.embedders.1.model."
_OPEN_CLIP_LAYERS = {"text_model.embeddings.position_embedding.weight": "positional_embedding",
                     "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
                     "text_model.final_layer_norm.weight": "ln_final.weight",
                     "text_model.final_layer_norm.bias": "ln_final.bias"}
_OPEN_CLIP_BLOCK = (("text_model.encoder.layers.", "transformer.resblocks."), ("layer_norm1", "ln_1"),
                    ("layer_norm2", "ln_2"), (".mlp.fc1.", ".mlp.c_fc."), (".mlp.fc2.", ".mlp.c_proj."),
                    (".self_attn.out_proj.", ".attn.out_proj."))


def open_clip_to_sgm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A `CLIPTextModelWithProjection` state dict in OpenCLIP's names (SDXL's second encoder): q, k, v
    fused into `attn.in_proj_*`, the projection transposed to (width, projection)."""
    state = {(k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v for k, v in state.items()}
    out = {SGM_OPEN_CLIP + "text_projection": state.pop("text_projection.weight").T.contiguous()}
    for key, name in _OPEN_CLIP_LAYERS.items():
        out[SGM_OPEN_CLIP + name] = state.pop(key)
    layers = sorted({int(m[1]) for k in state if (m := re.match(r"text_model\.encoder\.layers\.(\d+)\.", k))})
    for i in layers:
        prefix = f"text_model.encoder.layers.{i}.self_attn."
        for kind in ("weight", "bias"):
            out[f"{SGM_OPEN_CLIP}transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat(
                [state.pop(f"{prefix}{p}_proj.{kind}") for p in ("q", "k", "v")])
    for key, value in state.items():
        name = key
        for new, old in _OPEN_CLIP_BLOCK:
            name = name.replace(new, old)
        if name == key:
            continue  # position_ids and the like: not in OpenCLIP files
        out[SGM_OPEN_CLIP + name] = value
    return out


_SDXL_UNET_TOP = {"add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}


def sdxl_pipeline_to_sgm(unet: Any, vae: Any, text_encoder: Any, text_encoder_2: Any) -> dict[str, torch.Tensor]:
    """A whole tiny SDXL as one sgm state dict (UNet with its label embedding, VAE, both encoders)."""
    unet_state = {}
    for key, value in unet.state_dict().items():
        top = next((old + key[len(new):] for new, old in _SDXL_UNET_TOP.items() if key.startswith(new + ".")), None)
        unet_state[LDM_UNET + (top or unet_key_to_ldm(key, unet.config))] = value
    text = {SGM_TEXT + (k if k.startswith("text_model.") else "text_model." + k): v
            for k, v in text_encoder.state_dict().items()}
    return {**unet_state, **vae_to_ldm(vae.state_dict(), vae.config), **text,
            **open_clip_to_sgm(text_encoder_2.state_dict())}
