"""The learned token of a Concept Inversion run, and its files: saved in diffusers' textual-inversion
format (`learned_embeds.safetensors`, {token: (1, D)}, loadable with `pipe.load_textual_inversion`)
with a `concept_inversion.json` beside it (the rest: carrier word, templates, losses, config)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, NonFiniteWeightsError, OutputError
from .concept_config import ConceptInversionConfig

EMBEDDING_FILE = "learned_embeds.safetensors"  # diffusers' TEXT_INVERSION_NAME_SAFE
METADATA_FILE = "concept_inversion.json"


@dataclass
class LearnedEmbedding:
    """The learned token: its name, its input-embedding row v* (D,) float32 (CPU), the carrier word it
    started from, the templates it was trained with, the loss per step, seconds, config and provenance."""

    token: str
    vector: torch.Tensor
    init_token: str
    templates: tuple[str, ...] = ("a {}",)
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    config: ConceptInversionConfig | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def prompt(self, template: str | None = None) -> str:
        """The prompt a diffusers pipeline with the token loaded would take: 'a <concept>'."""
        return (template or self.templates[0]).format(self.token)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the vector (which goes to the safetensors file), plus its norm."""
        return {
            "token": self.token,
            "init_token": self.init_token,
            "templates": list(self.templates),
            "dimension": int(self.vector.numel()),
            "norm": float(self.vector.norm()),
            "final_loss": self.losses[-1] if self.losses else None,
            "mean_loss_last_10pct": (sum(self.losses[-max(1, len(self.losses) // 10):]) / max(1, len(self.losses) // 10)
                                     if self.losses else None),
            "steps_run": len(self.losses),
            "seconds": self.seconds,
            "config": None if self.config is None else self.config.to_dict(),
            "provenance": self.provenance,
        }

    def save(self, folder: str | os.PathLike) -> Path:
        """Write `folder/learned_embeds.safetensors` ({token: (1, D)}, diffusers' format, loadable with
        `pipe.load_textual_inversion(folder, token=...)`) and `folder/concept_inversion.json` (the
        rest, losses included). Both atomically; returns the folder."""
        from safetensors.torch import save as to_bytes

        path = Path(folder)
        payload = to_bytes({self.token: self.vector.detach().float().cpu().reshape(1, -1).contiguous()},
                           metadata={"format": "pt"})
        _write_bytes_atomic(path / EMBEDDING_FILE, payload)
        data = {**self.to_dict(), "losses": list(self.losses)}
        from ..files import write_text_atomic

        write_text_atomic(path / METADATA_FILE, json.dumps(data, indent=1))
        return path


def _write_bytes_atomic(target: Path, payload: bytes) -> None:
    temp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
        os.replace(temp, target)
    except OSError as error:
        if temp is not None and os.path.exists(temp):
            os.unlink(temp)
        raise OutputError(f"could not write {str(target)!r}: {error.strerror or error}") from None


def load_learned_embedding(path: str | os.PathLike, token: str | None = None,
                           init_token: str | None = None) -> LearnedEmbedding:
    """Read a learned token from a folder or a `.safetensors` file in diffusers' format.

    `token` picks the key (needed when the file holds several); `init_token` names the carrier word
    when no `concept_inversion.json` sits beside the file (one written by `LearnedEmbedding.save`).
    Pickled `.bin` files are refused; a multi-vector embedding ((k, D) with k > 1) too.
    """
    from safetensors.torch import load_file

    source = Path(path)
    file = source / EMBEDDING_FILE if source.is_dir() else source
    if not file.is_file():
        raise InputError(f"embedding: {str(file)!r} does not exist; expected a folder with {EMBEDDING_FILE} or that file")
    if file.suffix != ".safetensors":
        raise InputError(f"embedding: {str(file)!r} is not a .safetensors file; pickled embeddings are not read")
    try:
        tensors = load_file(str(file))
    except Exception as error:  # noqa: BLE001 - any read failure names the file
        raise InputError(f"embedding: {str(file)!r} is not a readable safetensors file ({error})") from None
    if token is None:
        if len(tensors) != 1:
            raise InputError(f"embedding: {str(file)!r} holds {len(tensors)} tokens {sorted(tensors)}; pass token=...")
        token = next(iter(tensors))
    if token not in tensors:
        raise InputError(f"embedding: {str(file)!r} has no token {token!r}; it holds {sorted(tensors)}")
    vector = tensors[token].float()
    if vector.dim() == 2 and vector.shape[0] == 1:
        vector = vector[0]
    if vector.dim() != 1:
        raise InputError(f"embedding: token {token!r} in {str(file)!r} has shape {tuple(tensors[token].shape)}; "
                         "expected (1, D) or (D,) (multi-vector embeddings are not supported)")
    if not bool(torch.isfinite(vector).all()):
        raise NonFiniteWeightsError(f"embedding: token {token!r} in {str(file)!r} holds NaN or Inf")
    metadata: dict[str, Any] = {}
    if (file.parent / METADATA_FILE).is_file():
        metadata = json.loads((file.parent / METADATA_FILE).read_text())
    carrier = init_token or metadata.get("init_token")
    if carrier is None:
        raise InputError(f"embedding: {str(file)!r} has no {METADATA_FILE} beside it; pass init_token=... "
                         "(any word that is one token of the model's tokenizer)")
    config = ConceptInversionConfig.from_dict(metadata["config"]) if metadata.get("config") else None
    return LearnedEmbedding(token=token, vector=vector, init_token=carrier,
                            templates=tuple(metadata.get("templates") or ("a {}",)),
                            losses=list(metadata.get("losses") or []), seconds=float(metadata.get("seconds") or 0.0),
                            config=config, provenance=metadata.get("provenance") or {})
