"""Step 0 of the probe: check every input before any compute — the config, the model (its parts
together, finite weights, the fused ops' backend), the image sets and their prompts, an external
N set."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from .config import PRESETS, ProbeConfig
from .controls import control_set
from .errors import InputError, InsufficientDataError
from .io import ImageSet, load_image_set
from .kernels.dispatch import resolve_backend
from .models.bundle import DiffusionModel
from .models.checks import check_finite_weights, warn_long_prompts


def resolve_config(config: ProbeConfig | str | None, overrides: dict[str, Any]) -> ProbeConfig:
    """A ProbeConfig from a config, a preset name or None ("mofc"), with `overrides` applied."""
    if config is None:
        config = "mofc"
    if isinstance(config, str):
        return ProbeConfig.from_preset(config, **overrides)
    if not isinstance(config, ProbeConfig):
        raise InputError(f"config: got {type(config).__name__}; expected a ProbeConfig or one of {sorted(PRESETS)}")
    return config.replace(**overrides) if overrides else config


def as_model(model: Any) -> DiffusionModel:
    """Accept a DiffusionModel, a diffusers pipeline, or a hub id / local folder."""
    if isinstance(model, DiffusionModel):
        return model
    if hasattr(model, "unet") and hasattr(model, "vae"):
        return DiffusionModel.from_pipeline(model)
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        from .models.loading import load_model

        return load_model(model)
    raise InputError(
        f"model: got {type(model).__name__}; expected a DiffusionModel, a StableDiffusionPipeline, "
        "or a hub id / local pipeline folder"
    )


def check_normal_nll(values: Any) -> torch.Tensor:
    """An external N set as (n,) float64: 1-D, at least 2 finite numbers; InputError otherwise."""
    try:
        tensor = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as error:
        raise InputError(f"normal_nll: expected a 1-D sequence of numbers, got {type(values).__name__}") from error
    if tensor.dim() != 1 or tensor.numel() < 2:
        raise InputError(f"normal_nll: expected a 1-D sequence of at least 2 NLLs, got shape {tuple(tensor.shape)}")
    bad = torch.nonzero(~torch.isfinite(tensor)).flatten().tolist()
    if bad:
        raise InputError(f"normal_nll: NaN or Inf at indices {bad[:10]}; expected finite NLLs")
    return tensor


def prepare_model(model: Any, config: ProbeConfig) -> tuple[DiffusionModel, str]:
    """The model, checked (parts together, finite weights), and the fused ops' backend resolved now:
    a Triton request that can't run fails before any compute."""
    model = as_model(model)
    model.check()
    check_finite_weights(model)  # a diverged LoRA is named as the weights' fault, before any inversion
    return model, resolve_backend(config.backend, torch.empty(0, device=model.device), op="probe")


def load_probe_sets(model: DiffusionModel, images: Any, prompts: Any, reference: Any, reference_prompts: Any,
                    config: ProbeConfig, warn_stacklevel: int | None = 4) -> dict[str, ImageSet]:
    """{"erased": E} or {"erased": E, "reference": R, "control": C}, validated (sizes, prompts, 2+ images
    each for d_N); C is the negative control (`unlearn_guard.controls`), absent when it is off.

    Prompts the text encoder cuts are warned about at `warn_stacklevel` (4: the line that called
    `probe`); None: no warning.
    """
    sets = {"erased": load_image_set(images, prompts, resolution=model.resolution, resize=config.resize, label="images")}
    if reference is not None:
        sets["reference"] = load_image_set(
            reference, reference_prompts, resolution=model.resolution, resize=config.resize, label="reference"
        )
        for label, part in (("images (E)", sets["erased"]), ("reference (R)", sets["reference"])):
            if len(part) < 2:
                raise InsufficientDataError(
                    f"d_N needs at least 2 images in each set; {label} has {len(part)}. "
                    "Add images, or probe without `reference` to get per-image NLL and PSNR only"
                )
        control = control_set(config, model.resolution, sets["erased"].prompts)
        if control is not None:
            sets["control"] = control
        elif warn_stacklevel is not None:
            warnings.warn("the negative control is off (control_images=0): nothing will show that this model does not "
                          "invert every image, so a 'remembers' reading cannot be checked", UserWarning,
                          stacklevel=warn_stacklevel)
    if warn_stacklevel is not None:
        warn_long_prompts(model, {"images": sets["erased"], "reference": sets.get("reference")}, stacklevel=warn_stacklevel)
    return sets


def seed_shape_of(model: DiffusionModel, images: ImageSet) -> tuple[int, int, int]:
    """z_T's shape (C, h, w) for these images: what the N set is drawn in."""
    factor = model.vae_scale_factor
    return model.latent_channels, images.pixels.shape[-2] // factor, images.pixels.shape[-1] // factor
