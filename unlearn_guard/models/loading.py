"""Load the model to probe: a pipeline, a folder, a hub id or a single file, with erased weights on top.
SD 1.x/2.x load as `StableDiffusionPipeline`, SDXL (model_index.json names `StableDiffusionXLPipeline`)
as that; a half-precision SDXL keeps its VAE in float32 (`DiffusionModel.to`).

`load_model` applies, in this order:
  1. `unet_weights`: a weight file in any shipping layout (`formats.py`: diffusers or ldm names,
     whole or partial, flat or nested; a partial file overlays the base UNet), or a diffusers
     `unet/` folder (fp16 variant, sharded with an index);
  2. `text_encoder`: a `CLIPTextModel` folder, a hub id with `text_encoder_subfolder`, or a state
     dict file (`text_encoders.py`);
  3. `lora`: a diffusers, peft or kohya-style LoRA (`lora_loading.py`).
Each load is recorded in `model.loaded_weights`: the format the file was taken for, how many
tensors it replaced, and its SHA-256; probe results and gate reports carry these records.
SLD (a guidance pipeline over plain SD weights) is refused by name.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, ModelError
from ..files import file_sha256
from .bundle import DiffusionModel, unwrap_unet
from .checks import listing, non_finite_tensors
from .formats import Parts, subset_name, unet_parts
from .hub import looks_like_hub_id
from .lora_loading import load_lora
from .state_dicts import WEIGHT_SUFFIXES, one_line_error, overlay, read_state_dict
from .text_encoders import check_text_encoder_fits, load_text_encoder, load_text_encoder_file

PathLike = str | os.PathLike
_UNET_WEIGHT_FILE = re.compile(r"^diffusion_pytorch_model(?:-\d+-of-\d+)?\.(?:(?P<variant>\w+)\.)?(?:safetensors|bin)$")
_UNET_INDEX_FILE = re.compile(r"^diffusion_pytorch_model\.(?:safetensors|bin)\.index\.(?:(?P<variant>\w+)\.)?json$")
SLD_PIPELINES = ("StableDiffusionPipelineSafe",)
SLD_REFUSAL = ("SLD (Safe Latent Diffusion) is refused: it is a guidance pipeline over plain Stable Diffusion "
               "weights, so probing its UNet probes plain SD; its erasure lives in sampling-time safety guidance, "
               "which a weight probe cannot see")


def _dtype_keyword() -> str:
    """diffusers 0.42 renamed from_pretrained's `torch_dtype` to `dtype` (the old name warns)."""
    import diffusers
    from packaging.version import Version

    return "dtype" if Version(diffusers.__version__).release >= (0, 42) else "torch_dtype"


_DTYPE_KEYWORD = _dtype_keyword()


# ---------------------------------------------------------------------------------------- load_model
def load_model(
    source: Any,
    *,
    unet_weights: PathLike | None = None,
    text_encoder: PathLike | None = None,
    lora: PathLike | None = None,
    torch_dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    local_files_only: bool = True,
    text_encoder_subfolder: str | None = None,
    config: PathLike | None = None,
    lora_scale: float = 1.0,
) -> DiffusionModel:
    """A checked `DiffusionModel` from `source`, with the erased weights applied on top.

    Args:
        source: a diffusers pipeline, a `DiffusionModel` (both changed in place), a local folder
            saved with `save_pretrained`, a hub id (read from the local cache unless
            `local_files_only=False`), or a single-file checkpoint of a whole SD (`.ckpt`,
            `.safetensors`), which needs `config`.
        unet_weights: a UNet weight file in any layout `formats.py` detects, or a diffusers UNet folder.
        text_encoder: a `CLIPTextModel` folder, a hub id (with `text_encoder_subfolder`), or a state dict file.
        lora: a LoRA adapter folder or file (diffusers, peft or kohya-style), applied at `lora_scale`.
        config: a diffusers pipeline folder whose configs describe a single-file `source` (no network).
        torch_dtype, device: where the finished model is put (all parts alike).
    """
    model = _base_model(source, torch_dtype=torch_dtype, local_files_only=local_files_only, config=config)
    if unet_weights is not None:
        apply_unet_weights(model, unet_weights)
    if text_encoder is not None:
        _apply_text_encoder(model, text_encoder, text_encoder_subfolder, local_files_only)
    elif text_encoder_subfolder is not None:
        raise InputError("text_encoder_subfolder: given without text_encoder; pass the hub id or folder it is in")
    if lora is not None:
        model.unet, info = load_lora(model.unet, lora, scale=lora_scale)
        _record(model, "lora", Path(lora), info["format"],
                f"{info['layers']} LoRA layers at scale {info['scale']:g}", info["notes"], file=info["file"])
    if device is not None or torch_dtype is not None:
        model.to(device=device, dtype=torch_dtype)  # also runs model.check()
    else:
        model.check()
    return model


def _record(model: DiffusionModel, argument: str, path: Path, fmt: str, what: str, notes: list[str],
            file: Path | None = None, **counts: Any) -> None:
    """One entry of `model.loaded_weights`, with the one-line summary the command line prints."""
    hashed = file or path
    sha = file_sha256(hashed) if hashed.is_file() else None
    summary = f"{argument} {path.name}: {fmt}, {what}" + "".join(f"; {note}" for note in notes)
    model.loaded_weights.append({"argument": argument, "path": str(path), "format": fmt, "sha256": sha,
                                 **counts, "notes": list(notes), "summary": summary})


def _replaced_text(replaced: int, total: int, part: str, subset: str | None) -> str:
    shown = f" ({subset})" if subset and subset != "all" else ""
    return f"replaced {replaced} of {total} {part} tensors{shown}"


def apply_unet_weights(model: DiffusionModel, path: PathLike) -> None:
    """Lay a UNet weight file (or a diffusers UNet folder) over `model`'s UNet, and its text-encoder part, if any."""
    path = Path(path)
    unet = unwrap_unet(model.unet)
    if path.is_dir():
        parts = _unet_folder_parts(path)
    else:
        if not path.is_file():
            raise InputError(f"unet_weights: file {str(path)!r} does not exist")
        parts = unet_parts(read_state_dict(path, "unet_weights"), path, unet, model.text_encoder)
    if not parts.unet and not parts.text_encoder:
        raise ModelError(f"weights file {str(path)!r} ({parts.format}) holds no UNet or text-encoder tensors")
    total = len(unet.state_dict())
    replaced = overlay(unet, parts.unet, path, "UNet") if parts.unet else 0
    subset = subset_name(list(parts.unet), total)
    what = _replaced_text(replaced, total, "UNet", subset)
    if parts.text_encoder:
        encoder = _copy_module(model.text_encoder)
        te_total = len(encoder.state_dict())
        te_replaced = overlay(encoder, parts.text_encoder, path, "text encoder")
        model.text_encoder = encoder
        what += f" and {te_replaced} of {te_total} text-encoder tensors"
    _record(model, "unet_weights", path, parts.format, what, parts.notes, replaced=replaced, total=total,
            subset=subset, text_encoder_replaced=len(parts.text_encoder))


def _copy_module(module: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(module)


def _unet_folder_parts(folder: Path) -> Parts:
    """A diffusers UNet folder (plain, a variant such as fp16, sharded with an index), read by diffusers."""
    from diffusers import UNet2DConditionModel

    if not (folder / "config.json").is_file():
        raise InputError(f"unet_weights: folder {str(folder)!r} has no config.json; expected a diffusers UNet "
                         f"folder (unet/) or a weight file ({', '.join(WEIGHT_SUFFIXES)})")
    variants, sharded = set(), False
    for entry in folder.iterdir():
        found = _UNET_WEIGHT_FILE.match(entry.name) or _UNET_INDEX_FILE.match(entry.name)
        if found:
            variants.add(found.group("variant"))
            sharded |= entry.name.endswith(".json")
    if not variants:
        raise InputError(f"unet_weights: folder {str(folder)!r} holds no diffusion_pytorch_model weights")
    variant = None if None in variants else sorted(variants)[0]
    try:
        loaded = UNet2DConditionModel.from_pretrained(str(folder), variant=variant, local_files_only=True)
    except Exception as error:  # OSError, ValueError from diffusers
        raise ModelError(f"could not load the UNet folder {str(folder)!r}: {type(error).__name__}: "
                         f"{one_line_error(error)[:300]}") from None
    state = loaded.state_dict()
    non_finite = non_finite_tensors(state.items())
    if non_finite:
        from ..errors import NonFiniteWeightsError

        raise NonFiniteWeightsError(f"UNet folder {str(folder)!r} holds NaN or Inf in {len(non_finite)} tensors: "
                                    f"{listing(non_finite)}; expected finite weights")
    fmt = "diffusers UNet folder" + (f" ({variant} variant)" if variant else "") + (" (sharded)" if sharded else "")
    return Parts(format=fmt, unet=state)


def _apply_text_encoder(model: DiffusionModel, source: PathLike, subfolder: str | None, local_files_only: bool) -> None:
    path = Path(source)
    if path.is_file():
        if subfolder is not None:
            raise InputError(f"text_encoder_subfolder: given, but text_encoder {str(path)!r} is a file")
        encoder, info = load_text_encoder_file(path, model.text_encoder)
        what = _replaced_text(info["replaced"], info["total"], "text-encoder", None)
        fmt, notes = info["format"], info["notes"]
    else:
        encoder = load_text_encoder(source, like=model.text_encoder, subfolder=subfolder,
                                    local_files_only=local_files_only)
        fmt = "CLIPTextModel folder" if path.is_dir() else "CLIPTextModel on the hub"
        what, notes = "replaced the text encoder", []
        if subfolder:
            fmt += f" (subfolder {subfolder})"
    check_text_encoder_fits(encoder, model.unet, source)
    model.text_encoder = encoder
    _record(model, "text_encoder", path, fmt, what, notes)


# ---------------------------------------------------------------------------------------- base model
SDXL_PIPELINES = ("StableDiffusionXLPipeline",)
SDXL_REFINERS = ("StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline")


def _pipeline_class(source: PathLike, local_files_only: bool) -> Any:
    """`StableDiffusionXLPipeline` when the folder's (or hub id's) model_index.json names an SDXL
    pipeline, else `StableDiffusionPipeline`. Refused by name: the SDXL refiner and inpainting
    pipelines, and a folder holding an SLD pipeline."""
    from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

    is_folder = Path(source).is_dir()
    try:
        index = (json.loads((Path(source) / "model_index.json").read_text()) if is_folder
                 else DiffusionPipeline.load_config(str(source), local_files_only=local_files_only))
        name = index.get("_class_name", "")
    except Exception:  # no index (yet): diffusers' loader says what is wrong
        return StableDiffusionPipeline
    if is_folder and name in SLD_PIPELINES:
        raise ModelError(f"{str(source)!r} is a {name} pipeline: {SLD_REFUSAL}")
    if name in SDXL_REFINERS:
        raise ModelError(f"{str(source)!r} is a {name}: an image-to-image SDXL pipeline (the refiner or inpainting) is "
                         "not supported; give the SDXL base model (StableDiffusionXLPipeline)")
    return StableDiffusionXLPipeline if name in SDXL_PIPELINES else StableDiffusionPipeline


def _pipeline_kwargs(pipeline_class: Any) -> dict[str, Any]:
    """SD 1.x/2.x pipelines load without their safety checker; SDXL's has none."""
    return {} if pipeline_class.__name__ in SDXL_PIPELINES else {"safety_checker": None, "requires_safety_checker": False}


def _base_model(source: Any, *, torch_dtype: torch.dtype | None, local_files_only: bool,
                config: PathLike | None) -> DiffusionModel:
    if isinstance(source, DiffusionModel):
        return source
    if isinstance(source, (str, os.PathLike)):
        if Path(source).is_file():
            return _model_from_single_file(Path(source), config)
        if config is not None:
            raise InputError(f"config: given, but source {str(source)!r} is not a single-file checkpoint")
        return _model_from_name_or_path(source, torch_dtype=torch_dtype, local_files_only=local_files_only)
    if hasattr(source, "unet"):
        if type(source).__name__ in SLD_PIPELINES or hasattr(source, "safety_concept"):
            raise ModelError(f"source: a {type(source).__name__}: {SLD_REFUSAL}")
        return DiffusionModel.from_pipeline(source)
    raise InputError(
        f"source: got a {type(source).__name__}; expected a diffusers pipeline, a DiffusionModel, "
        "a folder saved with save_pretrained, a single-file checkpoint, or a hub id"
    )


def _model_from_single_file(file: Path, config: PathLike | None) -> DiffusionModel:
    """A whole SD or SDXL in one ldm file, read by diffusers' `from_single_file` with a local config
    folder (whose model_index.json says which pipeline)."""
    if file.suffix.lower() not in WEIGHT_SUFFIXES:
        raise InputError(f"source: {str(file)!r} is a file with suffix {file.suffix!r}; expected a pipeline folder, "
                         f"a hub id, or a single-file checkpoint ({', '.join(WEIGHT_SUFFIXES)}) with config=")
    if config is None:
        raise InputError(
            f"source: {str(file)!r} is a file; a single-file checkpoint of a whole model needs config= (CLI "
            "--model-config), a diffusers pipeline folder whose configs describe it (nothing is downloaded); "
            "to lay erased weights over a base model, pass this file as unet_weights=... instead")
    folder = Path(config)
    if not (folder / "model_index.json").is_file():
        raise InputError(f"config: {str(folder)!r} has no model_index.json; expected a diffusers pipeline folder")
    pipeline_class = _pipeline_class(folder, True)  # SLD refused before the file is read
    read_state_dict(file, "source")  # one clear line for pickles, damage and NaN before diffusers reads it
    try:
        pipe = pipeline_class.from_single_file(str(file), config=str(folder), local_files_only=True,
                                               **_pipeline_kwargs(pipeline_class))
    except Exception as error:  # diffusers' SingleFileComponentError, ValueError, OSError
        raise ModelError(f"could not load {str(file)!r} as a single-file Stable Diffusion checkpoint with the "
                         f"configs of {str(folder)!r}: {type(error).__name__}: {one_line_error(error)[:300]}") from None
    model = DiffusionModel.from_pipeline(pipe, source=str(file))
    _record(model, "source", file, "single-file checkpoint (from_single_file)", f"configs from {folder}", [])
    return model


def _model_from_name_or_path(
    source: PathLike, *, torch_dtype: torch.dtype | None, local_files_only: bool
) -> DiffusionModel:
    path = Path(source)
    is_folder = path.is_dir()
    if not is_folder and (not isinstance(source, str) or not looks_like_hub_id(source)):
        raise InputError(f"source: folder {str(path)!r} does not exist; expected a pipeline folder or a hub id")
    pipeline_class = _pipeline_class(source, local_files_only or is_folder)
    kwargs: dict[str, Any] = _pipeline_kwargs(pipeline_class)
    if torch_dtype is not None:
        kwargs[_DTYPE_KEYWORD] = torch_dtype
    try:
        # A folder is read with local_files_only=True whatever the argument: nothing to download.
        pipe = pipeline_class.from_pretrained(
            str(source), local_files_only=local_files_only or is_folder, **kwargs
        )
    except Exception as error:  # diffusers raises OSError, ValueError or hub errors here
        if is_folder:
            raise ModelError(
                f"could not load a Stable Diffusion pipeline from folder {str(path)!r}: {one_line_error(error)[:400]}; "
                "expected a folder written by pipe.save_pretrained (with model_index.json)"
            ) from None
        where = "locally (local_files_only=True and not in the Hugging Face cache)" if local_files_only else ""
        raise ModelError(
            f"model {source!r} is not a folder here and could not be found {where or 'or downloaded'}: "
            f"{type(error).__name__}. "
            "Pass the path of a pipeline folder saved with save_pretrained, "
            f"download it first (`hf download {source}`), or use local_files_only=False"
        ) from None
    return DiffusionModel.from_pipeline(pipe, source=str(source))


# ---------------------------------------------------------------------------------------- kept API
def load_unet_state_dict(unet: torch.nn.Module, path: PathLike, *, strict: bool = True) -> torch.nn.Module:
    """Load a UNet weight file (any layout `formats.py` detects) into `unet` in place and return it.

    Keys and shapes are compared before anything is copied. With `strict=True` the file must hold
    every UNet tensor; with `strict=False` it may hold some of them (an overlay). A key the UNet
    lacks or a wrong shape raises `StateDictMismatchError` naming the file and keys.
    """
    from ..errors import StateDictMismatchError
    from .state_dicts import first

    file = Path(path)
    parts = unet_parts(read_state_dict(file, "unet_weights"), file, unet, None)
    missing = [key for key in unet.state_dict() if key not in parts.unet]
    if strict and missing:
        raise StateDictMismatchError(f"state dict {str(file)!r} does not match the UNet: {len(missing)} of "
                                     f"{len(unet.state_dict())} tensors missing from the file: {first(missing)}")
    overlay(unet, parts.unet, file, "UNet")
    return unet
