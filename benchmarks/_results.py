"""Shared by the benchmark scripts: Markdown tables, provenance-stamped rows in RESULTS.md, and a
JSON cache of measurements keyed by what they depend on."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from unlearn_guard.provenance import device_description, git_commit, package_version, package_versions

RESULTS = Path(__file__).with_name("RESULTS.md")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table; floats are written with 3 decimals."""
    def cell(value: object) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def append_results(title: str, body: str, device: torch.device | None = None) -> None:
    """Append a block to RESULTS.md: title with UTC time, then commit, device and versions, then body."""
    versions = package_versions()
    stamp = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"
    with RESULTS.open("a") as stream:
        stream.write(
            f"\n### {title}, {stamp}\n"
            f"commit {git_commit()}; device {device_description(device or torch.device('cpu'))}; "
            f"torch {versions['torch']}, diffusers {versions['diffusers']}{_cuda_stack(device)}\n\n{body}\n"
        )
    print(f"appended to {RESULTS}")


def _cuda_stack(device: torch.device | None) -> str:
    """', triton X, CUDA Y, driver Z' for a CUDA device (what a GPU number depends on beyond torch), else ''."""
    if device is None or device.type != "cuda":
        return ""
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30).stdout.split("\n")[0].strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        driver = "unknown"
    return f", triton {package_version('triton')}, CUDA {torch.version.cuda}, driver {driver}"


def cached(folder: Path, key: dict[str, Any], compute: Callable[[], Any]) -> Any:
    """`compute()`, stored as JSON in `folder` under a hash of `key` (with the key beside it) and
    read back from there by a later run with the same key."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = folder / f"{digest}.json"
    if path.is_file():
        return json.loads(path.read_text())["value"]
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "value": value}, indent=1))
    return value
