"""SDXL's conditioning: two text encoders, a pooled text embedding and the size/crop time ids.

An SDXL UNet (`addition_embed_type="text_time"`) takes, beside the token embeddings, `text_embeds`
(the second encoder's pooled, projected embedding, (B, P)) and `time_ids` (original size, crop
top-left, target size: (B, 6)). Everything in unlearn_guard passes one embeddings tensor per
prompt, which is concatenated, chunked and expanded along the batch. So the extras travel inside
it: `pack` appends them, flattened and zero-padded, as R extra rows after the L token rows,
(B, L + R, D), and `unet_conditioning` splits them off again before the UNet call. Batch
operations move a prompt's extras with its tokens, and an SD 1.x/2.x model never sees the rows.

The token embeddings follow diffusers' `StableDiffusionXLPipeline.encode_prompt`: each encoder's
penultimate hidden state, concatenated along D; the pooled embedding is the second encoder's
`text_embeds`. The time ids are (H, W, 0, 0, H, W) at the model's resolution, the pipeline's
default. An empty prompt is encoded as text, as for SD (the pipeline's `force_zeros_for_empty_prompt`
zeros apply only to a negative prompt it is not given).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ..errors import ModelError

TIME_IDS = 6  # original (h, w), crop top-left (y, x), target (h, w)


def is_sdxl_unet(unet_config: Any) -> bool:
    """True for a UNet conditioned on text_time extras (SDXL and its fine-tunes)."""
    return getattr(unet_config, "addition_embed_type", None) == "text_time"


def check_sdxl_parts(unet_config: Any, text_encoder: Any, text_encoder_2: Any, tokenizer: Any, tokenizer_2: Any) -> None:
    """ModelError naming the part that does not fit an SDXL UNet."""
    if text_encoder is None or text_encoder_2 is None or tokenizer is None or tokenizer_2 is None:
        raise ModelError("an SDXL UNet (addition_embed_type='text_time') needs text_encoder, text_encoder_2, tokenizer "
                         "and tokenizer_2 (a StableDiffusionXLPipeline); the SDXL refiner (one text encoder, "
                         "image to image) is not supported")
    hidden = text_encoder.config.hidden_size + text_encoder_2.config.hidden_size
    if hidden != unet_config.cross_attention_dim:
        raise ModelError(f"text encoders give {text_encoder.config.hidden_size} + {text_encoder_2.config.hidden_size} = "
                         f"{hidden} features but the SDXL UNet expects cross_attention_dim={unet_config.cross_attention_dim}")
    pooled = pooled_size(text_encoder_2)
    expected = unet_config.addition_time_embed_dim * TIME_IDS + pooled
    if unet_config.projection_class_embeddings_input_dim != expected:
        raise ModelError(f"the SDXL UNet expects projection_class_embeddings_input_dim="
                         f"{unet_config.projection_class_embeddings_input_dim}; text_encoder_2's pooled size {pooled} and "
                         f"{TIME_IDS} time ids of {unet_config.addition_time_embed_dim} give {expected}")
    if tokenizer.model_max_length != tokenizer_2.model_max_length:
        raise ModelError(f"tokenizer and tokenizer_2 pad to {tokenizer.model_max_length} and "
                         f"{tokenizer_2.model_max_length} tokens; SDXL concatenates their embeddings, so they must agree")


def pooled_size(text_encoder_2: Any) -> int:
    """P: the pooled embedding's size (the projection of a `CLIPTextModelWithProjection`)."""
    return int(getattr(text_encoder_2.config, "projection_dim", None) or text_encoder_2.config.hidden_size)


def extra_rows(pooled: int, width: int) -> int:
    """R: rows of width D that hold P pooled values and the 6 time ids."""
    return math.ceil((pooled + TIME_IDS) / width)


def pack(tokens: torch.Tensor, pooled: torch.Tensor, time_ids: torch.Tensor) -> torch.Tensor:
    """(B, L, D) tokens, (B, P) pooled, (B, 6) time ids -> (B, L + R, D)."""
    batch, _, width = tokens.shape
    extras = torch.cat([pooled.to(tokens.dtype), time_ids.to(tokens.dtype)], dim=1)
    rows = extra_rows(pooled.shape[1], width)
    padded = torch.nn.functional.pad(extras, (0, rows * width - extras.shape[1]))
    return torch.cat([tokens, padded.view(batch, rows, width)], dim=1)


def unet_conditioning(embeddings: torch.Tensor, length: int, pooled: int) -> dict[str, Any]:
    """The UNet keyword arguments from packed embeddings (B, L + R, D): encoder_hidden_states and
    added_cond_kwargs {text_embeds, time_ids}."""
    if embeddings.shape[1] != length + extra_rows(pooled, embeddings.shape[2]):
        raise ModelError(f"SDXL embeddings have {embeddings.shape[1]} rows; expected {length} token rows and "
                         f"{extra_rows(pooled, embeddings.shape[2])} for the pooled embedding and time ids "
                         "(make them with model.encode_prompts)")
    extras = embeddings[:, length:].flatten(1)
    return {"encoder_hidden_states": embeddings[:, :length],
            "added_cond_kwargs": {"text_embeds": extras[:, :pooled], "time_ids": extras[:, pooled : pooled + TIME_IDS]}}


def encode_sdxl_prompts(prompts: Sequence[str], encoders: Sequence[tuple[Any, Any]], resolution: int,
                        device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Packed SDXL embeddings (B, L + R, D) for `prompts`, from ((tokenizer, encoder), (tokenizer_2,
    encoder_2)) as `StableDiffusionXLPipeline.encode_prompt` forms them (no grad by the caller)."""
    hidden, pooled = [], None
    for tokenizer, encoder in encoders:
        ids = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        out = encoder(ids.to(device), output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
        if out[0].ndim == 2:  # the projected, pooled output of CLIPTextModelWithProjection
            pooled = out[0]
    if pooled is None:
        raise ModelError("text_encoder_2 gives no pooled embedding; SDXL's second encoder is a CLIPTextModelWithProjection")
    time_ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]], dtype=torch.float32,
                            device=device).expand(len(prompts), -1)
    return pack(torch.cat(hidden, dim=-1).to(dtype), pooled.to(dtype), time_ids)
