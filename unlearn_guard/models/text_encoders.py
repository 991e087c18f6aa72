"""Erased text encoders: a `CLIPTextModel` folder, a hub id with a subfolder, or a state dict file.

  - a folder saved with `save_pretrained` (or a pipeline folder holding `text_encoder/`);
  - a hub id and subfolder (AdvUnlearn: `OPTML-Group/AdvUnlearn`, subfolder `nudity_unlearned`),
    read with `CLIPTextModel.from_pretrained(..., subfolder=..., local_files_only=...)`;
  - a state dict file (`text_encoder.text_model.*`, `text_model.*` or ldm `cond_stage_model.*`),
    laid over a copy of the base model's encoder: every key must exist there with its shape.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, ModelError, NonFiniteWeightsError
from .bundle import module_device_dtype, unwrap_unet
from .checks import listing, non_finite_tensors
from .formats import text_encoder_parts
from .hub import from_pretrained_or_explain, looks_like_hub_id
from .state_dicts import WEIGHT_SUFFIXES, overlay, read_state_dict

PathLike = str | os.PathLike


def _check_finite(encoder: torch.nn.Module, where: str) -> None:
    non_finite = non_finite_tensors(encoder.named_parameters())
    if non_finite:
        raise NonFiniteWeightsError(f"text encoder {where} holds NaN or Inf in {len(non_finite)} tensor(s): "
                                    f"{listing(non_finite)}; expected finite weights")


def load_text_encoder(source: PathLike, like: torch.nn.Module | None = None, *, subfolder: str | None = None,
                      local_files_only: bool = True) -> torch.nn.Module:
    """A `CLIPTextModel` from a folder or a hub id (+ subfolder), on `like`'s device and dtype when given.

    A state dict file needs the base encoder: pass it as `like` (`load_text_encoder_file` does the rest).
    """
    path = Path(source)
    if path.is_file():
        if like is None:
            raise InputError(f"text_encoder: {str(path)!r} is a state dict file; it needs the base model's encoder")
        return load_text_encoder_file(path, like)[0]
    is_folder = path.is_dir()
    if not is_folder and not (isinstance(source, str) and looks_like_hub_id(source)):
        raise InputError(f"text_encoder: folder {str(path)!r} does not exist; expected a CLIPTextModel folder, "
                         f"a hub id (with text_encoder_subfolder) or a state dict file ({', '.join(WEIGHT_SUFFIXES)})")
    if is_folder and subfolder is None:
        if not (path / "config.json").is_file() and (path / "text_encoder" / "config.json").is_file():
            path = path / "text_encoder"  # a whole pipeline folder was given
        if not (path / "config.json").is_file():
            raise InputError(f"text_encoder: folder {str(path)!r} has no config.json; expected a CLIPTextModel "
                             "saved with save_pretrained")
    elif is_folder and not (path / subfolder / "config.json").is_file():
        raise InputError(f"text_encoder: folder {str(path)!r} has no {subfolder}/config.json; "
                         "expected a CLIPTextModel saved there with save_pretrained")
    from transformers import CLIPTextModel

    encoder = from_pretrained_or_explain(CLIPTextModel.from_pretrained, str(path) if is_folder else str(source),
                                         what="text encoder", kind="CLIPTextModel", subfolder=subfolder,
                                         local_files_only=local_files_only, is_folder=is_folder)
    _check_finite(encoder, repr(str(source)))
    encoder.eval()
    if like is not None:
        device, dtype = module_device_dtype(like, "text_encoder")
        encoder.to(device=device, dtype=dtype)
    return encoder


def load_text_encoder_file(file: PathLike, like: torch.nn.Module) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A copy of `like` with the file's tensors laid over it, and what was loaded (format, counts, notes)."""
    path = Path(file)
    state = read_state_dict(path, "text_encoder")
    parts = text_encoder_parts(state, path, like)
    if not parts.text_encoder:
        raise ModelError(f"weights file {str(path)!r} holds no text-encoder tensors")
    encoder = copy.deepcopy(like)
    replaced = overlay(encoder, parts.text_encoder, path, "text encoder")
    return encoder, {"format": parts.format, "replaced": replaced, "total": len(like.state_dict()),
                     "notes": parts.notes}


def check_text_encoder_fits(encoder: torch.nn.Module, unet: torch.nn.Module, where: Any) -> None:
    hidden = getattr(encoder.config, "hidden_size", None)
    cross = unwrap_unet(unet).config.cross_attention_dim
    if hidden is not None and hidden != cross:
        raise ModelError(f"text encoder {str(where)!r} has hidden_size={hidden} but the UNet expects "
                         f"cross_attention_dim={cross}; it belongs to another model")
