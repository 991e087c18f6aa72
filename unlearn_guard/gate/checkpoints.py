"""What to gate: erased weights given on the command line, or a directory of training checkpoints.

A checkpoint is a set of erased weights applied on top of the base model by `load_model`:
  - `unet_weights`: a full UNet state dict file (`.safetensors`, `.pt`, `.pth`, `.ckpt`, `.bin`),
  - `text_encoder`: a replacement `CLIPTextModel` folder,
  - `lora`: a LoRA adapter folder (diffusers' `pytorch_lora_weights.safetensors` or peft's
    `adapter_config.json` + `adapter_model.safetensors`).
`discover_checkpoints(folder)` lists `checkpoint-<step>/` sub-folders in step order and finds in
each what it holds (`weights_in`): a LoRA adapter (in the folder or one sub-folder), a diffusers
`unet/` sub-folder, a `text_encoder/` sub-folder, or a single UNet state dict file (accelerate's
optimizer/scheduler/RNG files are ignored).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, ModelError
from ..models.loading import DIFFUSERS_LORA_FILE, PEFT_CONFIG_FILE, SAFETENSORS_SUFFIXES, TORCH_SUFFIXES

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
WEIGHT_SUFFIXES = SAFETENSORS_SUFFIXES + TORCH_SUFFIXES
# Files accelerate / transformers write next to the model that are not model weights.
NOT_MODEL_FILES = re.compile(r"^(optimizer|scheduler|scaler|training_args|rng_state|random_states)(_\d+)?\.", re.I)
DIFFUSERS_UNET_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_HASH_CHUNK = 1 << 22  # 4 MiB


@dataclass(frozen=True)
class Weights:
    """Erased weights to apply on the base model; all None means the base model itself."""

    unet_weights: Path | None = None
    text_encoder: Path | None = None
    lora: Path | None = None

    def __post_init__(self) -> None:
        for name, kind in (("unet_weights", "file"), ("text_encoder", "folder"), ("lora", "folder or file")):
            value = getattr(self, name)
            if value is None:
                continue
            path = Path(value)
            object.__setattr__(self, name, path)
            if not path.exists():
                raise InputError(f"--{name.replace('_', '-')}: {str(path)!r} does not exist; expected a {kind}")
        if self.unet_weights is not None and not self.unet_weights.is_file():
            raise InputError(f"--unet-weights: {str(self.unet_weights)!r} is not a file; expected a UNet state dict file")
        if self.unet_weights is not None and self.unet_weights.suffix.lower() not in WEIGHT_SUFFIXES:
            raise InputError(
                f"--unet-weights: {str(self.unet_weights)!r} has suffix {self.unet_weights.suffix!r}; "
                f"expected one of {', '.join(WEIGHT_SUFFIXES)}"
            )
        if self.text_encoder is not None and not self.text_encoder.is_dir():
            raise InputError(f"--text-encoder: {str(self.text_encoder)!r} is not a folder; expected a CLIPTextModel folder")

    @property
    def is_base(self) -> bool:
        return self.unet_weights is None and self.text_encoder is None and self.lora is None

    def files(self) -> list[Path]:
        """Every file whose bytes define these weights, sorted (what the cache key hashes)."""
        found: list[Path] = []
        for path in (self.unet_weights, self.text_encoder, self.lora):
            if path is None:
                continue
            if path.is_file():
                found.append(path)
            else:
                found += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        return found

    def to_dict(self) -> dict[str, str | None]:
        return {name: None if value is None else str(value) for name, value in
                (("unet_weights", self.unet_weights), ("text_encoder", self.text_encoder), ("lora", self.lora))}

    def describe(self) -> str:
        parts = [f"{name} {value}" for name, value in self.to_dict().items() if value is not None]
        return ", ".join(parts) if parts else "base model (no erased weights)"


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
    unet_weights: Path | None = None
    unet_folder = path / "unet"
    if unet_folder.is_dir():
        files = [unet_folder / name for name in DIFFUSERS_UNET_FILES if (unet_folder / name).is_file()]
        if not files:
            raise InputError(
                f"checkpoint {str(path)!r} has a unet/ folder without {' or '.join(DIFFUSERS_UNET_FILES)}"
            )
        unet_weights = files[0]
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
    weights = Weights(unet_weights=unet_weights, text_encoder=text_encoder, lora=lora)
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


_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, remembered per (path, size, mtime) within the process."""
    file = Path(path).resolve()
    stat = file.stat()
    memo_key = (str(file), stat.st_size, stat.st_mtime_ns)
    if memo_key not in _HASH_MEMO:
        digest = hashlib.sha256()
        try:
            with open(file, "rb") as stream:
                while chunk := stream.read(_HASH_CHUNK):
                    digest.update(chunk)
        except OSError as error:
            raise InputError(f"cannot read {str(file)!r} to hash it: {error.strerror or error}") from None
        _HASH_MEMO[memo_key] = digest.hexdigest()
    return _HASH_MEMO[memo_key]


def weight_hashes(weights: Weights) -> dict[str, str]:
    """{file path: sha256} for every file of `weights`."""
    return {str(file): file_sha256(file) for file in weights.files()}


def model_fingerprint(source: str) -> dict[str, Any]:
    """What identifies the base model: file hashes of a local folder, or hub id and cached revision."""
    path = Path(source)
    if path.is_dir():
        if not (path / "model_index.json").is_file():  # checked before hashing a folder that is no model
            raise ModelError(f"--model: folder {str(path)!r} has no model_index.json; expected a Stable Diffusion "
                             "pipeline folder written by pipe.save_pretrained, or a hub id")
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        digest = hashlib.sha256()
        for file in files:
            digest.update(f"{file.relative_to(path)}:{file_sha256(file)}\n".encode())
        return {"source": str(source), "kind": "folder", "sha256": digest.hexdigest(), "files": len(files)}
    revision = None
    try:
        from huggingface_hub import snapshot_download

        revision = Path(snapshot_download(str(source), local_files_only=True)).name
    except Exception:  # noqa: BLE001 - not in the local cache: the loader will say so
        revision = None
    return {"source": str(source), "kind": "hub", "revision": revision}
