"""A transformers model and its processor for a judge, from a hub id or a local folder, offline first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...models.hub import from_pretrained_or_explain, is_local_folder
from .base import weight_files


class PretrainedParts:
    """`model` (eval mode, on `device`) and `processor` loaded from `source`, and where they came from.

    Args:
        model_class / processor_class: e.g. `AutoModelForImageClassification`, `AutoImageProcessor`.
        source: a hub id (read from the local Hugging Face cache unless `local_files_only=False`)
            or a folder written by `save_pretrained` (model and processor together).
        what: how errors name the model, e.g. "ImageNetJudge model".
    """

    def __init__(self, model_class: Any, processor_class: Any, source: str, *, what: str, local_files_only: bool,
                 device: str | torch.device) -> None:
        self.source = str(source)
        self.is_folder = is_local_folder(self.source, what, "a hub id or a folder written by save_pretrained")
        common = {"what": what, "local_files_only": local_files_only, "is_folder": self.is_folder}
        extra: dict[str, Any] = {}
        if model_class.__name__.startswith("Auto"):
            # transformers 5.25's Auto classes look for a peft adapter_config.json without
            # local_files_only: offline, 5 retries cost 23 s before the real error.
            extra["adapter_kwargs"] = {"local_files_only": local_files_only or self.is_folder}
        self.model = from_pretrained_or_explain(model_class.from_pretrained, self.source,
                                                kind=model_class.__name__, **common, **extra)
        self.processor = from_pretrained_or_explain(processor_class.from_pretrained, self.source,
                                                    kind=processor_class.__name__, **common)
        self.model.eval().to(device)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def record(self) -> dict[str, Any]:
        """The model's id or folder, its cached revision, and the SHA-256 of its weight files."""
        folder: Path | None = Path(self.source) if self.is_folder else None
        if folder is None:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(self.source, "config.json")
            folder = Path(cached).parent if isinstance(cached, str) else None
        return {"model": self.source, "revision": getattr(self.model.config, "_commit_hash", None),
                "model_files": weight_files(folder) if folder is not None else {}}
