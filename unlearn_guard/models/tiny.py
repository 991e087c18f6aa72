"""Seeded diffusers/transformers components built from configs, with no network.

One place builds the models that the tests and the default run use:
  - `build_tiny_components`: a few-hundred-kB latent text-to-image model (64x64 images, 8x8x4
    latents) with random weights; same classes and code paths as Stable Diffusion.
  - `build_tiny_sdxl_components`: the same for SDXL (two text encoders, text_time conditioning).
  - `build_sdxl_shaped_components`: the SDXL base architecture with random weights (GPU benchmarks).
  - `build_sd14_shaped_components`: the SD 1.4 architecture (UNet 860M, VAE 84M, CLIP-L text
    encoder) with random weights, for "does it run at full size" checks on CPU.
  - `save_tiny_image_classifier`, `save_tiny_clip`: folders that load like `microsoft/resnet-50`
    and `openai/clip-vit-*` (model and processor), a few kB, for the judges.
  - `build_tiny_clip`: a tiny CLIP model and processor for the CLIP-score wiring.
The tokenizer is a real `CLIPTokenizer` over a byte-level vocabulary with no merges (every
character is a token); transformers 4 reads it from files, so it is written to a temporary folder.
"""

from __future__ import annotations

import inspect
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# SD 1.x scheduler_config.json (PNDM in the released pipelines; converted to DDIM by the schedule).
SD14_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
    "trained_betas": None,
}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode map (256 entries)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def build_char_tokenizer(model_max_length: int = 77):
    """A real `CLIPTokenizer` whose vocabulary is every byte-level character (and its `</w>` form)."""
    from transformers import CLIPTokenizer

    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for sym in symbols:
        vocab[sym] = len(vocab)
    for sym in symbols:
        vocab[sym + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    if "vocab" in inspect.signature(CLIPTokenizer.__init__).parameters:  # transformers >= 5
        return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)
    with tempfile.TemporaryDirectory(prefix="ug_tok_") as folder:  # transformers 4 reads files
        vocab_file = Path(folder) / "vocab.json"
        merges_file = Path(folder) / "merges.txt"
        vocab_file.write_text(json.dumps(vocab))
        merges_file.write_text("#version: 0.2\n")
        tokenizer = CLIPTokenizer(
            vocab_file=str(vocab_file), merges_file=str(merges_file), model_max_length=model_max_length
        )
    return tokenizer


@dataclass(frozen=True)
class TinyModelSpec:
    """Sizes of the tiny model; the defaults give 64x64 RGB images and (4, 8, 8) latents."""

    image_size: int = 64
    unet_channels: tuple[int, ...] = (32, 64)
    vae_channels: tuple[int, ...] = (16, 16, 32, 32)  # 4 blocks: 3 downsamples = factor 8, as SD
    text_hidden: int = 32
    text_layers: int = 2
    max_length: int = 16
    prediction_type: str = "epsilon"  # "v_prediction": an SD 2.x 768-style model


def build_tiny_components(seed: int = 0, spec: TinyModelSpec = TinyModelSpec()) -> dict[str, Any]:
    """Random-weight tiny SD components: unet, vae, text_encoder, tokenizer, scheduler (DDIM).

    Returns a dict with the keys `StableDiffusionPipeline` takes (plus no safety checker), so
    `StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None,
    requires_safety_checker=False)` works.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_char_tokenizer(model_max_length=spec.max_length)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=spec.image_size // 8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=spec.unet_channels,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=spec.text_hidden,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(spec.vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(spec.vae_channels),
        block_out_channels=spec.vae_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=spec.image_size,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=spec.text_hidden,
            intermediate_size=37,
            num_hidden_layers=spec.text_layers,
            num_attention_heads=4,
            max_position_embeddings=spec.max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    scheduler = DDIMScheduler.from_config({k: v for k, v in SD14_SCHEDULER_CONFIG.items() if k != "_class_name"},
                                          prediction_type=spec.prediction_type)
    for module in (unet, vae, text_encoder):
        module.eval()
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


def build_tiny_sdxl_components(seed: int = 0, image_size: int = 64, prediction_type: str = "epsilon") -> dict[str, Any]:
    """Random-weight tiny SDXL components: a UNet with `addition_embed_type="text_time"`, two tiny
    CLIP text encoders (the second with a projection, which gives the pooled embedding), both
    tokenizers, a tiny VAE (force_upcast, as SDXL's) and SDXL's Euler scheduler config. The keys are
    `StableDiffusionXLPipeline`'s."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer, tokenizer_2 = build_char_tokenizer(model_max_length=16), build_char_tokenizer(model_max_length=16)
    text = dict(vocab_size=len(tokenizer), intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=16, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=image_size // 8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, transformer_layers_per_block=(1, 2),
        cross_attention_dim=32 + 48, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32, norm_num_groups=8,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(16, 16, 32, 32), layers_per_block=1,
                        latent_channels=4, norm_num_groups=8, sample_size=image_size, force_upcast=True,
                        scaling_factor=0.13025)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=32, **text))
    torch.manual_seed(seed + 3)
    # widths differ (32 and 48), as in SDXL (768 and 1280): diffusers' single-file loader tells the
    # two encoders apart by their width
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=48, projection_dim=32, **text))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading",
                                       prediction_type=prediction_type)
    for module in (unet, vae, text_encoder, text_encoder_2):
        module.eval()
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "text_encoder_2": text_encoder_2,
            "tokenizer": tokenizer, "tokenizer_2": tokenizer_2, "scheduler": scheduler}


def build_sdxl_shaped_components(seed: int = 0) -> dict[str, Any]:
    """SDXL base architecture with random weights (UNet 2.6B params, CLIP-L and OpenCLIP-bigG-shaped
    text encoders, 1024 px): full-size compute for GPU benchmarks, no download. About 14 GB in
    float32; build it under `torch.device("meta")` to check shapes without the memory."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer, tokenizer_2 = build_char_tokenizer(model_max_length=77), build_char_tokenizer(model_max_length=77)
    ids = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=128, layers_per_block=2, block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10), use_linear_projection=True,
        cross_attention_dim=2048, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                        layers_per_block=2, latent_channels=4, sample_size=1024, scaling_factor=0.13025,
                        force_upcast=True)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                                num_attention_heads=12, hidden_act="quick_gelu", **ids))
    torch.manual_seed(seed + 3)
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=1280, intermediate_size=5120,
                                                                num_hidden_layers=32, num_attention_heads=20,
                                                                projection_dim=1280, hidden_act="gelu", **ids))
    with torch.device("cpu"):  # the schedule's tables hold data even when the modules are built on "meta"
        scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                           num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading")
    for module in (unet, vae, text_encoder, text_encoder_2):
        module.eval()
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "text_encoder_2": text_encoder_2,
            "tokenizer": tokenizer, "tokenizer_2": tokenizer_2, "scheduler": scheduler}


def build_sd14_shaped_components(seed: int = 0) -> dict[str, Any]:
    """SD 1.4 architecture with random weights (UNet 860M params): full-size compute, no download."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_char_tokenizer(model_max_length=77)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=64,
        cross_attention_dim=768,
        attention_head_dim=8,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    scheduler = PNDMScheduler.from_config({k: v for k, v in SD14_SCHEDULER_CONFIG.items() if k not in ("_class_name", "clip_sample")})
    for module in (unet, vae, text_encoder):
        module.eval()
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


def save_tiny_image_classifier(folder: str | Path, id2label: dict[int, str], seed: int = 0) -> Path:
    """A random-weight ResNet image classifier and its ConvNext image processor (32 px) in `folder`.

    Loads with `AutoModelForImageClassification` / `AutoImageProcessor` as microsoft/resnet-50 does.
    """
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    torch.manual_seed(seed)
    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                          num_labels=len(id2label), id2label=dict(id2label),
                          label2id={label: i for i, label in id2label.items()})
    ResNetForImageClassification(config).save_pretrained(folder)
    ConvNextImageProcessor(size={"shortest_edge": 32}).save_pretrained(folder)
    return Path(folder)


def build_tiny_clip(seed: int = 0, image_size: int = 32) -> tuple[Any, Any]:
    """A random-weight tiny `CLIPModel` and its `CLIPProcessor` (the byte-level tokenizer), no network.

    For the CLIP-score wiring (`unlearn_guard.utility`); save both with `save_pretrained(folder)`
    and pass the folder as the CLIP model. A random CLIP's text-image cosines straddle 0 and the
    CLIP score clamps at 0, so both final norms get a positive bias: the projected features share
    a positive direction (cosines near 1) while the image and text still move them.
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = build_char_tokenizer(model_max_length=77)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(image_size=image_size, patch_size=image_size // 4, hidden_size=32, intermediate_size=37,
                           num_hidden_layers=2, num_attention_heads=4),
        projection_dim=16,
    )
    model = CLIPModel(config).eval()
    with torch.no_grad():
        for norm in (model.text_model.final_layer_norm, model.vision_model.post_layernorm):
            norm.bias.fill_(2.0)
        for projection in (model.text_projection, model.visual_projection):
            projection.weight.abs_()
    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                         crop_size={"height": image_size, "width": image_size})
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def save_tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    """`build_tiny_clip`'s model and processor saved in `folder` (loads like openai/clip-vit-*)."""
    model, processor = build_tiny_clip(seed)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return Path(folder)
