"""The gate's output folder: what it holds (gate.json, report.html, cache/), the checks made on it
before any compute, and the atomic writes of the two reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..files import check_writable_folder, write_text_atomic
from .cache import ResultCache

GATE_JSON = "gate.json"
REPORT_HTML = "report.html"
CACHE_DIR = "cache"
# cache/sets/: the reference set's own probe per model and weights, reused (with --resume) by gates of
# other concept sets against the same reference images (not counted as checkpoint results)
SETS_DIR = "sets"


def existing_report(output: Path) -> list[str]:
    """What in `output` a new gate would overwrite: the report files and cached entries."""
    found = [name for name in (GATE_JSON, REPORT_HTML) if (output / name).exists()]
    cached = len(ResultCache(output / CACHE_DIR))
    if cached:
        found.append(f"{CACHE_DIR}/ ({cached} cached checkpoint results)")
    return found


def check_output(output: Path, resume: bool, overwrite: bool) -> None:
    """`output` is a folder a new gate may write: refuses a file, and a report held there unless
    --resume or --overwrite says what to do with it."""
    if resume and overwrite:
        raise InputError("--resume and --overwrite: pass one of them, not both")
    if output.exists() and not output.is_dir():
        raise InputError(f"--output: {str(output)!r} is a file; expected a folder for gate.json and report.html")
    held = existing_report(output) if output.is_dir() else []
    if held and not (resume or overwrite):
        raise InputError(
            f"--output: {str(output)!r} already holds a gate report ({', '.join(held)}); pass --resume to reuse its "
            "cached results, --overwrite to replace it, or choose another --output folder"
        )


def check_output_writable(output: Path, cache: ResultCache) -> None:
    """The output folder (and its cache, when it exists) can be written: checked before any compute."""
    check_writable_folder(output, "--output")
    if cache.folder.is_dir():
        check_writable_folder(cache.folder, "--output")


def write_reports(report: dict[str, Any], output: Path) -> tuple[Path, Path]:
    """gate.json first (the record of truth), then report.html; each written atomically."""
    from ..report.html import render_report

    json_path = write_text_atomic(output / GATE_JSON, json.dumps(report, indent=1))
    html_path = write_text_atomic(output / REPORT_HTML, render_report(report))
    return json_path, html_path
