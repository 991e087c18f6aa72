"""Parts of the small world's text-to-image model, built from configs (weights come from training).

A latent diffusion model with Stable Diffusion's classes and code paths, shrunk to the shapes
world: 32x32 RGB images, a 3-block `AutoencoderKL` (factor 4, so 8x8x4 latents like SD's
64x64x4 in miniature), a word-level tokenizer over the world's vocabulary, a 2-layer
`CLIPTextModel` (random, frozen: distinct words give distinct embeddings, which is all the UNet
needs), a `UNet2DConditionModel` with cross-attention at 8x8 and 4x4, and SD 1.4's noise
schedule. `StableDiffusionPipeline.from_pretrained(folder)` loads what `save_pretrained` wrote.
"""

from __future__ import annotations

from typing import Any

import torch

from ..models.tiny import SD14_SCHEDULER_CONFIG
from .shapes import IMAGE_SIZE, vocabulary

MAX_TOKENS = 12  # "<bos> a red circle on a white background <eos>" is 9
TEXT_HIDDEN = 64
_SPECIALS = ("<|pad|>", "<|unk|>", "<|startoftext|>", "<|endoftext|>")


def build_word_tokenizer():
    """A fast word-level tokenizer: lower-cased, split on whitespace, <bos> ... <eos>, padded with <eos>."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate([*_SPECIALS, *vocabulary()])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<|unk|>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", vocab["<|startoftext|>"]), ("<|endoftext|>", vocab["<|endoftext|>"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|unk|>",
        model_max_length=MAX_TOKENS,
    )


def build_text_encoder(tokenizer, seed: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=TEXT_HIDDEN,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_TOKENS,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    return encoder.eval().requires_grad_(False)


def build_vae(seed: int):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=IMAGE_SIZE,
    )


def build_unet(seed: int):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 4,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64, 64),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=8,
        norm_num_groups=16,
    )


def build_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config({k: v for k, v in SD14_SCHEDULER_CONFIG.items() if k != "_class_name"})


def assemble_pipeline(unet, vae, text_encoder, tokenizer) -> Any:
    """A `StableDiffusionPipeline` of the small world's parts (no safety checker)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=build_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
