"""Per-checkpoint result cache, so an interrupted gate resumes from what it finished.

One JSON file per probed checkpoint, `<folder>/<key>.json`, written atomically (temporary file,
then rename). The key is the SHA-256 of everything that determines the probe's numbers: the
base model's fingerprint, the erased weights' file hashes, the concept and reference images'
pixel hashes and prompts, and the probe config (without `progress` and `batch_size`, which change no number).
A different image, weight file, prompt or knob gives another key, so a stale entry is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

from ..files import write_text_atomic

CACHE_VERSION = 1
# Fields that cannot change a number: progress bars, and the chunk size (every random draw comes
# from per-image generators, and tests/test_probe.py checks that a batch of N equals N singles).
_NOT_IN_KEY = ("progress", "batch_size")


def cache_key(
    model: dict[str, Any],
    weights: dict[str, str],
    concept: list[tuple[str, str]],
    reference: list[tuple[str, str]],
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> str:
    """SHA-256 over the canonical JSON of the inputs.

    Args:
        model: the base model's fingerprint (`model_fingerprint`).
        weights: {file: sha256} of the erased weights (paths are dropped: moving files keeps the key).
        concept / reference: (image sha256, prompt) per image, in order.
        config: `ProbeConfig.to_dict()`.
        extra: anything else the cached entry depends on (the gate's thumbnail count).
    """
    identity = {k: v for k, v in model.items() if k != "source" or model.get("kind") == "hub"}
    payload = {
        "version": CACHE_VERSION,
        "model": identity,
        "weights": sorted(weights.values()),
        "concept": [list(pair) for pair in concept],
        "reference": [list(pair) for pair in reference],
        "config": {k: v for k, v in config.items() if k not in _NOT_IN_KEY},
        "extra": extra or {},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class ResultCache:
    """`get(key)` / `put(key, entry)` over one folder of JSON files."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError) as error:  # written atomically, so only a foreign edit gets here
            warnings.warn(f"ignoring unreadable cache entry {str(path)!r}: {error}", stacklevel=2)
            return None
        if not isinstance(entry, dict) or entry.get("cache_key") != key:
            warnings.warn(f"ignoring cache entry {str(path)!r}: it does not hold key {key}", stacklevel=2)
            return None
        return entry

    def put(self, key: str, entry: dict[str, Any]) -> Path:
        return write_text_atomic(self.path(key), json.dumps({**entry, "cache_key": key}, indent=1))

    def __len__(self) -> int:
        return len(list(self.folder.glob("*.json"))) if self.folder.is_dir() else 0
