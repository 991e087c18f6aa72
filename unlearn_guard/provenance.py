"""What a result must record to be reproducible: package versions, git commit, device, time."""

from __future__ import annotations

import datetime as _dt
import os
import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

_PACKAGES = ("unlearn_guard", "torch", "diffusers", "transformers", "peft", "numpy", "scipy", "torchmetrics")


def package_version(name: str) -> str | None:
    """The installed version of distribution `name`, None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a probe result depends on (None when missing)."""
    return {name: package_version(name) for name in _PACKAGES}


def git_commit() -> str | None:
    """The unlearn_guard checkout's commit (with '+dirty' for local changes).

    A copy without .git (say, a working tree sent to a GPU machine) reports $UNLEARN_GUARD_COMMIT if
    set, else None."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("UNLEARN_GUARD_COMMIT") or None
    return commit + ("+dirty" if dirty else "")


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"{device.type} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def model_provenance(model: Any) -> dict[str, Any]:
    """Which model a result came from: its source, family ("sd" or "sdxl") and what its UNet predicts
    (eps, v or x0), for `provenance(..., **model_provenance(model))`."""
    return {"model_source": model.source, "model_family": model.family, "prediction_type": model.prediction_type}


def provenance(device: torch.device, dtype: torch.dtype, **extra: Any) -> dict[str, Any]:
    """One dict for reports: versions, commit, device, dtype, python, time (UTC) and `extra`."""
    return {
        "versions": package_versions(),
        "git_commit": git_commit(),
        "device": device_description(device),
        "dtype": str(dtype).replace("torch.", ""),
        "python": platform.python_version(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }
