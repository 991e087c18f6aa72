"""Read a saved result (gate.json, or a probe result JSON) into the report's one shape.

The report shape is the gate's: top-level verdict, thresholds, inputs, config, provenance and a
list of checkpoint records (d_N, interval, PSNR, the full probe result, N-set NLLs, thumbnails).
A probe result becomes a report with one record and no verdict.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import InputError

GATE_KIND = "unlearn_guard.gate"
PROBE_KIND = "unlearn_guard.probe"


def probe_record(data: dict[str, Any], name: str) -> dict[str, Any]:
    """One checkpoint record from a probe result dict (`ProbeResult.to_dict()` plus the CLI's extras)."""
    md = data.get("memory_distance") or {}
    summary = data["erased"]["summary"]
    extras = ("kind", "normal_nll", "thumbnails", "weights", "weight_sha256", "model", "multi_memory")
    return {
        "name": name,
        "step": None,
        "weights": data.get("weights") or {},
        "weight_sha256": data.get("weight_sha256") or {},
        "memory": None if not data.get("memory") else {k: data["memory"][k] for k in ("value", "ci_low", "ci_high")},
        "notes": data.get("notes") or [],
        "diverged": summary.get("diverged", 0),
        "d_n": md.get("value"),
        "ci_low": md.get("ci_low"),
        "ci_high": md.get("ci_high"),
        "confidence": md.get("confidence"),
        "distance_kind": md.get("kind"),
        "psnr_mean": None if summary["psnr_mean"] is None else float(summary["psnr_mean"]),
        "nll_mean": summary["nll_mean"],
        "probe": {k: v for k, v in data.items() if k not in extras},
        "normal_nll": data.get("normal_nll") or [],
        "thumbnails": data.get("thumbnails") or [],
        "verdict": None,
        "passed": None,
        "reasons": [],
        **({"attacks": ["memory", "multi-memory"], "multi_memory": data["multi_memory"]}
           if data.get("multi_memory") else {}),
    }


def report_from_probe(data: dict[str, Any]) -> dict[str, Any]:
    provenance = data.get("provenance") or {}
    model = data.get("model") or {"source": provenance.get("model_source")}
    record = probe_record(data, str(model.get("source") or "model"))

    def inputs(part: dict[str, Any] | None) -> dict[str, Any] | None:
        if part is None:
            return None
        return {"folder": None, "count": len(part["images"]),
                "images": [{"name": i["name"], "prompt": i["prompt"], "sha256": i["sha256"]} for i in part["images"]]}

    return {
        "kind": PROBE_KIND,
        "verdict": None,
        "passed": None,
        "reasons": [],
        "thresholds": None,
        "model": model,
        "inputs": {"concept_images": inputs(data["erased"]), "reference_images": inputs(data.get("reference"))},
        "config": data.get("config", {}),
        "seed": (data.get("config") or {}).get("seed"),
        "device": provenance.get("device"),
        "dtype": provenance.get("dtype"),
        "versions": provenance.get("versions"),
        "provenance": provenance,
        "checkpoints": [record],
    }


def load_report(path: str | os.PathLike) -> dict[str, Any]:
    """The report dict from a gate.json or probe result file; InputError naming the file otherwise."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"RESULT: {str(file)!r} does not exist; expected a gate.json or a probe result JSON file")
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InputError(f"RESULT: {str(file)!r} is not readable JSON: {error}") from None
    if isinstance(data, dict) and data.get("kind") == GATE_KIND and isinstance(data.get("checkpoints"), list):
        return data
    if isinstance(data, dict) and isinstance(data.get("erased"), dict) and "summary" in data["erased"]:
        try:
            return report_from_probe(data)
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"RESULT: {str(file)!r} looks like a probe result but lacks {error}") from None
    raise InputError(
        f"RESULT: {str(file)!r} is neither a gate report (kind {GATE_KIND!r}) nor a probe result "
        "(written by `unlearn-guard probe` or ProbeResult.to_json)"
    )
