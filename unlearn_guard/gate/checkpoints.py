"""What to gate: erased weights given on the command line, or a directory of training checkpoints.

A checkpoint is a set of erased weights applied on top of the base model by `load_model`:
  - `unet_weights`: a UNet weight file in any layout `models/formats.py` detects (diffusers or ldm
    names, whole or partial, nested; `.safetensors`, `.pt`, `.pth`, `.ckpt`, `.bin`), or a
    diffusers `unet/` folder (fp16 variant, sharded with an index);
  - `text_encoder`: a `CLIPTextModel` folder, a state dict file, or a hub id (`org/name`) with
    `text_encoder_subfolder`;
  - `lora`: a LoRA adapter folder or file (diffusers, peft or kohya-style).
`discover_checkpoints(folder)` lists `checkpoint-<step>/` sub-folders in step order and finds in
each what it holds (`weights_in`): a LoRA adapter (in the folder or one sub-folder), a diffusers
`unet/` sub-folder (a `unet_ema/` beside it is ignored, and said so), a `text_encoder/` sub-folder,
or a single weight file (accelerate's optimizer/scheduler/RNG files are ignored).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, ModelError
from ..files import file_sha256
from ..models.loading import SLD_PIPELINES, SLD_REFUSAL
from ..models.lora_loading import DIFFUSERS_LORA_FILE, PEFT_CONFIG_FILE
from ..models.state_dicts import WEIGHT_SUFFIXES
from ..models.hub import looks_like_hub_id

__all__ = ["Checkpoint", "Weights", "discover_checkpoints", "file_sha256", "model_fingerprint", "weight_hashes",
           "weights_in"]

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
# Files accelerate / transformers write next to the model that are not model weights.
NOT_MODEL_FILES = re.compile(r"^(optimizer|scheduler|scaler|training_args|rng_state|random_states)(_\d+)?\.", re.I)
UNET_FOLDERS = ("unet", "unet_ema")


def _is_hub_id(value: Any) -> bool:
    """'org/name' that is no path here (a bare name is taken for a missing folder)."""
    return isinstance(value, str) and "/" in value and looks_like_hub_id(value) and not Path(value).exists()


@dataclass(frozen=True)
class Weights:
    """Erased weights to apply on the base model; all None means the base model itself.

    `ignored` names what a checkpoint folder held that is not gated (an EMA UNet), so that it is
    said, never silently dropped.
    """

    unet_weights: Path | None = None
    text_encoder: Path | str | None = None
    lora: Path | None = None
    text_encoder_subfolder: str | None = None
    ignored: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, kind in (("unet_weights", "file or unet/ folder"), ("text_encoder", "folder, file or org/name hub id"),
                           ("lora", "folder or file")):
            value = getattr(self, name)
            if value is None or (name == "text_encoder" and _is_hub_id(value)):
                continue
            path = Path(value)
            object.__setattr__(self, name, path)
            if not path.exists():
                raise InputError(f"--{name.replace('_', '-')}: {str(path)!r} does not exist; expected a {kind}")
        unet = self.unet_weights
        if unet is not None and unet.is_dir() and not (unet / "config.json").is_file():
            raise InputError(f"--unet-weights: {str(unet)!r} is a folder without config.json; expected a weight "
                             "file or a diffusers unet/ folder")
        if unet is not None and unet.is_file() and unet.suffix.lower() not in WEIGHT_SUFFIXES:
            raise InputError(f"--unet-weights: {str(unet)!r} has suffix {unet.suffix!r}; "
                             f"expected one of {', '.join(WEIGHT_SUFFIXES)}")
        encoder = self.text_encoder
        if isinstance(encoder, Path) and encoder.is_file() and encoder.suffix.lower() not in WEIGHT_SUFFIXES:
            raise InputError(f"--text-encoder: {str(encoder)!r} has suffix {encoder.suffix!r}; expected a CLIPTextModel "
                             f"folder or a state dict file ({', '.join(WEIGHT_SUFFIXES)})")
        if self.text_encoder_subfolder is not None and self.text_encoder is None:
            raise InputError("--text-encoder-subfolder: given without --text-encoder (the hub id or folder it is in)")

    @property
    def is_base(self) -> bool:
        return self.unet_weights is None and self.text_encoder is None and self.lora is None

    def files(self) -> list[Path]:
        """Every local file whose bytes define these weights, sorted (what the cache key hashes)."""
        found: list[Path] = []
        for path in (self.unet_weights, self.text_encoder, self.lora):
            if path is None or isinstance(path, str):
                continue
            if path.is_file():
                found.append(path)
            else:
                root = path / self.text_encoder_subfolder if path == self.text_encoder and self.text_encoder_subfolder \
                    else path
                found += sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
        return found

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {name: None if value is None else str(value) for name, value in
                                  (("unet_weights", self.unet_weights), ("text_encoder", self.text_encoder),
                                   ("lora", self.lora))}
        if self.text_encoder_subfolder is not None:
            record["text_encoder_subfolder"] = self.text_encoder_subfolder
        if self.ignored:
            record["ignored"] = list(self.ignored)
        return record

    def describe(self) -> str:
        parts = [f"{name} {value}" for name, value in self.to_dict().items()
                 if value is not None and name not in ("ignored",)]
        text = ", ".join(parts) if parts else "base model (no erased weights)"
        return text + "".join(f" ({note})" for note in self.ignored)


@dataclass(frozen=True)
class Checkpoint:
    """One thing to gate: a name, its training step when known, and its weights."""

    name: str
    weights: Weights
    step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "step": self.step, "weights": self.weights.to_dict()}


def _is_lora_folder(path: Path) -> bool:
    return (path / PEFT_CONFIG_FILE).is_file() or (path / DIFFUSERS_LORA_FILE).is_file()


def _refuse_sld_checkpoint(path: Path) -> None:
    index = path / "model_index.json"
    try:
        name = json.loads(index.read_text()).get("_class_name", "") if index.is_file() else ""
    except (OSError, ValueError, AttributeError):
        name = ""
    if name in SLD_PIPELINES:
        raise ModelError(f"checkpoint {str(path)!r} is a {name} pipeline: {SLD_REFUSAL}")


def _unet_folder_in(path: Path) -> tuple[Path | None, tuple[str, ...]]:
    """The diffusers UNet folder of a checkpoint (unet/, else unet_ema/), and what is ignored, said."""
    found = [path / name for name in UNET_FOLDERS if (path / name).is_dir()]
    for folder in found:
        if not (folder / "config.json").is_file() or not any(folder.glob("diffusion_pytorch_model*")):
            raise InputError(f"checkpoint {str(path)!r} has a {folder.name}/ folder without config.json and "
                             "diffusion_pytorch_model weights; expected a UNet saved with save_pretrained")
    if not found:
        return None, ()
    if len(found) == 2:
        return found[0], ("unet_ema/ ignored: the gate probes unet/, the weights training ended with",)
    note = ("unet_ema/ gated: the checkpoint holds no unet/",) if found[0].name == "unet_ema" else ()
    return found[0], note


def weights_in(folder: str | os.PathLike) -> Weights:
    """The erased weights one checkpoint folder holds; InputError when it holds none or is ambiguous."""
    path = Path(folder)
    lora: Path | None = None
    if _is_lora_folder(path):
        lora = path
    else:
        nested = sorted(p for p in path.iterdir() if p.is_dir() and _is_lora_folder(p))
        if len(nested) > 1:
            raise InputError(
                f"checkpoint {str(path)!r} holds {len(nested)} LoRA adapters ({', '.join(p.name for p in nested)}); "
                "expected at most one"
            )
        lora = nested[0] if nested else None
    _refuse_sld_checkpoint(path)
    unet_weights, ignored = _unet_folder_in(path)
    text_encoder = path / "text_encoder" if (path / "text_encoder" / "config.json").is_file() else None
    if unet_weights is None and lora is None:
        loose = sorted(
            p for p in path.iterdir()
            if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES and not NOT_MODEL_FILES.match(p.name)
        )
        if len(loose) > 1:
            raise InputError(
                f"checkpoint {str(path)!r} holds {len(loose)} weight files ({', '.join(p.name for p in loose)}); "
                "expected one UNet state dict (or a unet/, text_encoder/ or LoRA adapter folder)"
            )
        unet_weights = loose[0] if loose else None
    weights = Weights(unet_weights=unet_weights, text_encoder=text_encoder, lora=lora, ignored=ignored)
    if weights.is_base:
        entries = sorted(p.name for p in path.iterdir())
        raise InputError(
            f"checkpoint {str(path)!r} holds no erased weights (it has: {', '.join(entries[:10]) or 'nothing'}); "
            f"expected a LoRA adapter ({DIFFUSERS_LORA_FILE} or {PEFT_CONFIG_FILE}), a UNet state dict "
            f"({', '.join(WEIGHT_SUFFIXES)}), a unet/ folder or a text_encoder/ folder"
        )
    return weights


def discover_checkpoints(folder: str | os.PathLike) -> list[Checkpoint]:
    """`checkpoint-<step>/` sub-folders of `folder`, sorted by step, with the weights each holds."""
    path = Path(folder)
    if not path.is_dir():
        raise InputError(f"--checkpoints: {str(path)!r} is not a folder; expected a folder of checkpoint-<step>/ folders")
    found = []
    for entry in path.iterdir():
        match = CHECKPOINT_PATTERN.match(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    if not found:
        entries = sorted(p.name for p in path.iterdir())
        raise InputError(
            f"--checkpoints: {str(path)!r} has no checkpoint-<step>/ folders (it has: {', '.join(entries[:10]) or 'nothing'})"
        )
    return [Checkpoint(name=entry.name, step=step, weights=weights_in(entry)) for step, entry in sorted(found)]


def weight_hashes(weights: Weights) -> dict[str, str]:
    """{file path: sha256} for every local file of `weights`; a hub text encoder by id and cached revision."""
    hashes = {str(file): file_sha256(file) for file in weights.files()}
    if isinstance(weights.text_encoder, str):
        name = weights.text_encoder + (f"/{weights.text_encoder_subfolder}" if weights.text_encoder_subfolder else "")
        hashes[f"hub:{name}"] = _cached_revision(weights.text_encoder) or "not in the local cache"
    return hashes


def _cached_revision(repo: str) -> str | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, local_files_only=True)).name
    except Exception:  # noqa: BLE001 - not in the local cache: the loader will say so
        return None


_WEIGHT_FILE_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")


def _folder_digest(folder: Path, configs_only: bool = False) -> tuple[str, int]:
    """SHA-256 over (relative name, file hash) of a folder's files (only its non-weight files with
    `configs_only`), and how many files went in."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and not (configs_only and p.suffix.lower() in _WEIGHT_FILE_SUFFIXES))
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(folder)}:{file_sha256(file)}\n".encode())
    return digest.hexdigest(), len(files)


def model_fingerprint(source: str, config: str | Path | None = None) -> dict[str, Any]:
    """What identifies the base model: file hashes of a local folder, or hub id and cached revision.
    A single-file model is hashed with the configs of its `config` folder (--model-config): the same
    file read with other configs is another model."""
    path = Path(source)
    if path.is_dir():
        if not (path / "model_index.json").is_file():  # checked before hashing a folder that is no model
            raise ModelError(f"--model: folder {str(path)!r} has no model_index.json; expected a Stable Diffusion "
                             "pipeline folder written by pipe.save_pretrained, or a hub id")
        digest, count = _folder_digest(path)
        return {"source": str(source), "kind": "folder", "sha256": digest, "files": count}
    if path.is_file():  # a single-file checkpoint of a whole model
        found = {"source": str(source), "kind": "file", "sha256": file_sha256(path), "files": 1}
        if config is not None and Path(config).is_dir():
            found["config"], found["config_files"] = str(config), _folder_digest(Path(config), configs_only=True)
        return found
    return {"source": str(source), "kind": "hub", "revision": _cached_revision(str(source))}
