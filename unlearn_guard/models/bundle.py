"""`DiffusionModel`: the parts of a latent text-to-image model that probing needs, in one object.

It holds unet, vae, text_encoder, tokenizer and the scheduler *config* (the schedule is always
taken from it, SPEC 1), and offers the four computations the probe is made of: encode prompts,
encode images to z0, predict noise, decode latents. The UNet may be a plain
`UNet2DConditionModel`, one with peft adapters injected (`unet.add_adapter`), or a
`peft.PeftModel` wrapping one: the in-training case works as is.

Shapes: images (B, 3, H, W) in [-1, 1]; latents (B, C, H/f, W/f) with f the VAE factor (8 for
SD); prompt embeddings (B, L, D).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ..errors import ModelError
from ..schedule import alpha_prod_at, alphas_cumprod, epsilon_from_output, prediction_type_of
from .sdxl import check_sdxl_parts, encode_sdxl_prompts, is_sdxl_unet, pooled_size, unet_conditioning


def unwrap_unet(unet: torch.nn.Module) -> torch.nn.Module:
    """The `UNet2DConditionModel` under peft, `torch.compile` and DDP/accelerate wrappers."""
    for _ in range(8):  # wrappers nest (DDP around compile around peft); 8 levels is plenty
        get_base = getattr(unet, "get_base_model", None)
        if callable(get_base):
            unet = get_base()
        elif isinstance(getattr(unet, "_orig_mod", None), torch.nn.Module):
            unet = unet._orig_mod
        elif isinstance(unet, torch.nn.parallel.DistributedDataParallel) or (
            isinstance(getattr(unet, "module", None), torch.nn.Module) and not hasattr(unet, "config")
        ):
            unet = unet.module
        else:
            break
    return unet


def module_device_dtype(module: torch.nn.Module, name: str) -> tuple[torch.device, torch.dtype]:
    params = [p for p in module.parameters()]
    if not params:
        raise ModelError(f"{name} has no parameters; expected a trained torch module")
    devices = {p.device for p in params}
    if len(devices) > 1:
        raise ModelError(f"{name} is split across devices {sorted(map(str, devices))}; move it to one device")
    # Adapter weights (LoRA) are often kept in fp32 beside a bf16 base: take the dominant dtype.
    counts: dict[torch.dtype, int] = {}
    for p in params:
        counts[p.dtype] = counts.get(p.dtype, 0) + p.numel()
    return params[0].device, max(counts, key=counts.get)


@dataclass
class DiffusionModel:
    """unet + vae + text_encoder + tokenizer + scheduler_config, checked for consistency.

    Build it with `DiffusionModel.from_pipeline(pipe)`, `DiffusionModel.from_components(...)`,
    or `unlearn_guard.models.load_model(...)` for hub ids, local folders and erased weights.
    """

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: Any
    scheduler_config: dict[str, Any]
    source: str = "components"
    extras: dict[str, Any] = field(default_factory=dict)
    # What `load_model` laid over the base model: format, tensors replaced, SHA-256 (one dict per file).
    loaded_weights: list[dict[str, Any]] = field(default_factory=list)
    # SDXL's second text encoder (a CLIPTextModelWithProjection) and its tokenizer; None for SD 1.x/2.x
    text_encoder_2: torch.nn.Module | None = None
    tokenizer_2: Any = None
    _alphas: tuple[dict[str, Any], torch.Tensor] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.scheduler_config = dict(self.scheduler_config)
        self.check()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pipeline(cls, pipe: Any, source: str | None = None) -> "DiffusionModel":
        """From a diffusers `StableDiffusionPipeline` (or any pipeline with the same parts)."""
        missing = [n for n in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if getattr(pipe, n, None) is None]
        if missing:
            raise ModelError(f"pipeline {type(pipe).__name__} lacks {missing}; expected a Stable Diffusion pipeline")
        return cls(
            unet=pipe.unet,
            vae=pipe.vae,
            text_encoder=pipe.text_encoder,
            tokenizer=pipe.tokenizer,
            scheduler_config=dict(pipe.scheduler.config),
            source=source or getattr(pipe, "name_or_path", None) or type(pipe).__name__,
            text_encoder_2=getattr(pipe, "text_encoder_2", None),
            tokenizer_2=getattr(pipe, "tokenizer_2", None),
        )

    @classmethod
    def from_components(
        cls,
        unet: torch.nn.Module,
        vae: torch.nn.Module,
        text_encoder: torch.nn.Module,
        tokenizer: Any,
        scheduler: Any = None,
        scheduler_config: dict[str, Any] | None = None,
        source: str = "components",
        text_encoder_2: torch.nn.Module | None = None,
        tokenizer_2: Any = None,
    ) -> "DiffusionModel":
        """From loose parts; give either a scheduler object or its config dict (SDXL: both text
        encoders and tokenizers)."""
        if scheduler_config is None:
            if scheduler is None:
                raise ModelError("from_components needs `scheduler` or `scheduler_config` (the noise schedule)")
            scheduler_config = dict(scheduler.config)
        return cls(unet, vae, text_encoder, tokenizer, scheduler_config, source=source, text_encoder_2=text_encoder_2,
                   tokenizer_2=tokenizer_2)

    # ------------------------------------------------------------------ checks and properties
    def check(self) -> None:
        """Raise ModelError when parts disagree on device or dtype, or the UNet/VAE don't fit."""
        parts = {"unet": self.unet, "vae": self.vae, "text_encoder": self.text_encoder}
        if self.text_encoder_2 is not None:
            parts["text_encoder_2"] = self.text_encoder_2
        found = {name: module_device_dtype(module, name) for name, module in parts.items()}
        devices = {name: dev for name, (dev, _) in found.items()}
        if len(set(devices.values())) > 1:
            raise ModelError(
                "model parts are on different devices: "
                + ", ".join(f"{n}={d}" for n, d in devices.items())
                + "; move them with model.to(device)"
            )
        dtypes = {name: dt for name, (_, dt) in found.items()}
        # A float32 VAE beside a half-precision UNet is a common, deliberate upcast (the VAE
        # overflows in fp16); encode/decode cast to the VAE's dtype. Any other mix is a mistake.
        vae_ok = dtypes["vae"] in (dtypes["unet"], torch.float32)
        if any(dtypes[n] != dtypes["unet"] for n in parts if n.startswith("text_encoder")) or not vae_ok:
            raise ModelError(
                "model parts have different dtypes: "
                + ", ".join(f"{n}={d}" for n, d in dtypes.items())
                + "; cast them with model.to(dtype=...) (only the VAE may stay in float32)"
            )
        unet_cfg, vae_cfg = unwrap_unet(self.unet).config, self.vae.config
        if is_sdxl_unet(unet_cfg):
            check_sdxl_parts(unet_cfg, self.text_encoder, self.text_encoder_2, self.tokenizer, self.tokenizer_2)
        elif self.text_encoder_2 is not None:
            raise ModelError("text_encoder_2 is given but the UNet has no SDXL text_time conditioning; a second text "
                             "encoder belongs to an SDXL model")
        elif getattr(unet_cfg, "addition_embed_type", None) is not None:
            raise ModelError(f"UNet addition_embed_type={unet_cfg.addition_embed_type!r}: supported are Stable Diffusion "
                             "1.x/2.x UNets (none) and SDXL ('text_time')")
        if unet_cfg.in_channels != vae_cfg.latent_channels:
            raise ModelError(
                f"unet.in_channels={unet_cfg.in_channels} but vae.latent_channels={vae_cfg.latent_channels}"
            )
        if "num_train_timesteps" not in self.scheduler_config:
            raise ModelError("scheduler_config lacks 'num_train_timesteps'; pass the model's scheduler config")
        prediction_type_of(self.scheduler_config)

    @property
    def family(self) -> str:
        """"sdxl" for a UNet with SDXL's text_time conditioning, else "sd" (SD 1.x and 2.x)."""
        return "sdxl" if is_sdxl_unet(unwrap_unet(self.unet).config) else "sd"

    @property
    def prediction_type(self) -> str:
        """What the UNet predicts: "epsilon" (SD 1.x, SD 2.x base), "v_prediction" (SD 2.x 768) or
        "sample" (x0). `predict_noise` always returns eps (SPEC 1.1)."""
        return prediction_type_of(self.scheduler_config)

    def epsilon(self, output: torch.Tensor, latents: torch.Tensor, timesteps: float | torch.Tensor) -> torch.Tensor:
        """eps from a raw UNet `output` at `latents` z_t and `timesteps` (one, or one per batch
        element): the conversion of SPEC 1.1 for v- and x0-prediction; the output itself for eps."""
        if self.prediction_type == "epsilon":
            return output
        if self._alphas is None or self._alphas[0] != self.scheduler_config:  # abar_t, built once per config
            self._alphas = (dict(self.scheduler_config), alphas_cumprod(self.scheduler_config))
        t = timesteps.detach() if isinstance(timesteps, torch.Tensor) else timesteps
        return epsilon_from_output(output, latents, alpha_prod_at(self._alphas[1], t), self.prediction_type)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return module_device_dtype(self.unet, "unet")[1]

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def scaling_factor(self) -> float:
        return float(getattr(self.vae.config, "scaling_factor", 0.18215))

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def resolution(self) -> int:
        """The image side the UNet was built for (sample_size * VAE factor): 512 for SD 1.4."""
        return int(unwrap_unet(self.unet).config.sample_size) * self.vae_scale_factor

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "DiffusionModel":
        """Move every part; a VAE whose config says `force_upcast` (SDXL's overflows in float16)
        stays in float32 under a half-precision cast, as diffusers upcasts it to decode."""
        upcast = bool(getattr(self.vae.config, "force_upcast", False))
        for module in self.modules():
            # diffusers warns on every dtype cast, so cast only what actually changes
            current = module_device_dtype(module, type(module).__name__)[1]
            wanted = torch.float32 if module is self.vae and upcast and dtype in (torch.float16, torch.bfloat16) else dtype
            module.to(device=device, dtype=wanted if wanted is not None and wanted != current else None)
        self.check()
        return self

    def modules(self) -> tuple[torch.nn.Module, ...]:
        parts = (self.unet, self.vae, self.text_encoder)
        return parts if self.text_encoder_2 is None else (*parts, self.text_encoder_2)

    # ------------------------------------------------------------------ computations
    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Text embeddings c (B, L, D) in the model's dtype, padded to the tokenizer's max length.
        SDXL: both encoders' penultimate states (B, L, D1 + D2) with the pooled embedding and time
        ids packed as extra rows (`models/sdxl.py`); pass them on as one tensor."""
        if self.text_encoder_2 is not None:
            return encode_sdxl_prompts(prompts, ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)),
                                       self.resolution, self.device, self.dtype)
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        hidden = self.text_encoder(tokens.input_ids.to(self.device))[0]
        return hidden.to(self.dtype)

    @torch.no_grad()
    def encode_images(
        self, pixels: torch.Tensor, generators: Sequence[torch.Generator] | None, mode: str = "sample"
    ) -> torch.Tensor:
        """z0 = scaling_factor * (VAE posterior sample or mean), float32 (B, C, h, w).

        `pixels` are (B, 3, H, W) in [-1, 1]. One generator per image keeps draws independent of
        batching; generators live on the CPU so results do not depend on the device.
        """
        posterior = self.vae.encode(pixels.to(self.device, self.vae.dtype)).latent_dist
        if mode == "mean":
            latent = posterior.mean
        else:
            gens = list(generators) if generators is not None else None
            noise = torch.stack(
                [torch.randn(posterior.mean.shape[1:], generator=g, dtype=torch.float32) for g in gens]
            ) if gens is not None else torch.randn(posterior.mean.shape, dtype=torch.float32)
            latent = posterior.mean + posterior.std * noise.to(posterior.mean.device, posterior.mean.dtype)
        return latent.float() * self.scaling_factor

    @torch.no_grad()
    def predict_noise(self, latents: torch.Tensor, timestep: int, embeddings: torch.Tensor) -> torch.Tensor:
        """eps_theta(z, t, c) as float32; latents (B, C, h, w), embeddings (B, L, D). A v- or
        x0-predicting UNet's output is converted to eps (SPEC 1.1).

        `timestep` is an int (or an integer-valued float) or, for diffusers schedulers whose spacing
        falls between training timesteps (Euler/LMS with "linspace"), a float the UNet embeds as is."""
        value = float(timestep)
        t = (torch.full((latents.shape[0],), int(value), device=self.device, dtype=torch.long) if value.is_integer()
             else torch.full((latents.shape[0],), value, device=self.device, dtype=torch.float32))
        out = self.unet(latents.to(self.device, self.dtype), t, **self.unet_conditioning(embeddings.to(self.device, self.dtype)))
        sample = out.sample if hasattr(out, "sample") else out[0]
        return self.epsilon(sample.float(), latents, value)

    def unet_conditioning(self, embeddings: torch.Tensor) -> dict[str, Any]:
        """The UNet's keyword arguments for embeddings from `encode_prompts`: encoder_hidden_states,
        and for SDXL also added_cond_kwargs (pooled text embedding and time ids)."""
        if self.text_encoder_2 is None:
            return {"encoder_hidden_states": embeddings}
        return unet_conditioning(embeddings, int(self.tokenizer.model_max_length), pooled_size(self.text_encoder_2))

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (B, 3, H, W), float32: clamp(decode(z / scaling_factor) / 2 + 0.5)."""
        decoded = self.vae.decode(latents.to(self.device, self.vae.dtype) / self.scaling_factor).sample
        return (decoded.float() / 2 + 0.5).clamp(0, 1)
