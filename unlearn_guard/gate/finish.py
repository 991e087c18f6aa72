"""What both gates (one process, or rank 0 of a sharded run) do with the probe results: record each
checkpoint's result for the cache, decide each record, and write the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from ..config import ProbeConfig
from ..errors import OutputError
from ..io import ImageSet
from ..provenance import package_versions, provenance
from ..results import ProbeResult, interval_record
from .cache import ResultCache
from .checkpoints import Checkpoint
from .decision import Decision, decide, overall
from .inputs import GateConfig, GateInputs, check_dtype
from .output import write_reports
from .render import thumbnail_rows

REPORT_KIND = "unlearn_guard.gate"
# Where each attack's part sits in a checkpoint's record (memory's fields are the record's own).
PART_FIELDS = {"multi-memory": "multi_memory", "concept-inversion": "concept_inversion",
               "adversarial-prompt": "adversarial_prompt", "utility": "utility"}


def checkpoint_entry(checkpoint: Checkpoint, result: ProbeResult, images: ImageSet, thumbnails: int,
                     hashes: dict[str, str], seconds: float) -> dict[str, Any]:
    """The cached part of one checkpoint's record (no decision: thresholds are applied later).
    """
    md = result.memory_distance
    summary = result.erased.summary()
    memory = result.memory
    return {
        **checkpoint.to_dict(),
        "weight_sha256": hashes,
        # what the loader took each file for, the tensors it replaced and the file's SHA-256
        "loaded_weights": list(result.provenance.get("loaded_weights") or []),
        "memory": None if memory is None else {**interval_record(memory), "n_reconstructed": memory.n_reconstructed,
                                               "n_diverged": memory.n_diverged, "n_images": memory.n_images,
                                               "n_atypical": memory.n_atypical},
        "control_memory": control_record(result),
        "d_n": None if md is None else md.value,
        "ci_low": None if md is None else md.ci_low,
        "ci_high": None if md is None else md.ci_high,
        "confidence": None if md is None else md.confidence,
        "distance_kind": result.config.distance,
        "notes": list(result.notes),
        "diverged": summary["diverged"],
        "psnr_mean": None if summary["psnr_mean"] is None else float(summary["psnr_mean"]),
        "nll_mean": summary["nll_mean"],
        "seconds": seconds,
        "probe": result.to_dict(),
        "normal_nll": [float(v) for v in result.normal_nll],
        "thumbnails": thumbnail_rows(images, result, thumbnails),
    }


def assemble_entry(checkpoint: Checkpoint, hashes: dict[str, str], parts: dict[str, dict[str, Any]],
                   attacks: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """One checkpoint's entry from its parts (each computed, reused or cached): memory's fields at the
    top, each further attack's part under its field, and this checkpoint's name, step and weights
    (a reused or cached part may come from a checkpoint with the same weights under another name)."""
    entry = dict(parts.get("memory") or {})
    entry.update({**checkpoint.to_dict(), "weight_sha256": hashes, "attacks": list(attacks)})
    for attack, name in PART_FIELDS.items():
        if attack in parts:
            entry[name] = parts[attack]
    return entry


def control_record(result: ProbeResult) -> dict[str, Any] | None:
    """The negative control's memory score, its size and cost in UNet evaluations, or None when off."""
    control = result.control_memory
    if control is None:
        return None
    return {**interval_record(control), "n_reconstructed": control.n_reconstructed, "n_images": control.n_images,
            "n_atypical": control.n_atypical, "unet_evaluations": result.control.unet_evaluations}


def decided_record(entry: dict[str, Any], config: GateConfig, keys: dict[str, Any], from_cache: bool,
                   reused_from: str | None) -> tuple[dict[str, Any], Decision]:
    """One checkpoint's record in gate.json: its entry, where the entry came from (`keys`: its cache
    key(s) and origin), and its decision under this run's thresholds."""
    decision = decide(entry, config.thresholds)
    record = {**entry, **keys, "from_cache": from_cache, "reused_from": reused_from, **decision.to_dict()}
    return record, decision


def _image_records(images: ImageSet, folder: Path) -> dict[str, Any]:
    return {"folder": str(folder), "count": len(images),
            "images": [{"name": n, "prompt": p, "sha256": h} for n, p, h in zip(images.names, images.prompts, images.sha256)]}


def build_report(config: GateConfig, fingerprint: dict[str, Any], concept: ImageSet, reference: ImageSet,
                 probe_config: ProbeConfig, records: list[dict[str, Any]], verdict: Decision, resumed: int,
                 device: torch.device | None, reused: int = 0) -> dict[str, Any]:
    """The whole gate.json: verdict, thresholds, inputs, config, provenance and every record."""
    first = {}
    if records:  # the device and dtype the attacks ran on, from whichever part recorded them
        record = records[0]
        first = ((record.get("probe") or {}).get("provenance")
                 or (((record.get("concept_inversion") or {}).get("embedding")) or {}).get("provenance")
                 or (record.get("multi_memory") or {}).get("provenance")
                 or (record.get("adversarial_prompt") or {}).get("provenance")
                 or (record.get("utility") or {}).get("provenance") or {})
    return {
        "kind": REPORT_KIND,
        "format_version": 3,  # 3: attacks (multi_memory, concept_inversion, adversarial_prompt, utility parts); 2: the memory score decides
        **verdict.to_dict(),
        "thresholds": config.thresholds.to_dict(config.attacks.attacks),
        "attacks": config.attacks.to_dict(),
        # the fingerprint (what the cache keys hold), and what the probes found the model to be
        "model": {**fingerprint, **{key: first[key] for key in ("model_family", "prediction_type") if key in first}},
        "inputs": {
            "concept_images": _image_records(concept, Path(config.concept_images)),
            "reference_images": _image_records(reference, Path(config.reference_images)),
        },
        "config": probe_config.to_dict(),
        "seed": probe_config.seed,
        "device": first.get("device", str(device) if device else None),
        "dtype": first.get("dtype", config.dtype),
        "versions": package_versions(),
        "provenance": provenance(device or torch.device("cpu"), check_dtype(config.dtype) or torch.float32,
                                 seed=probe_config.seed, model_source=config.model),
        "resumed_from_cache": resumed,  # entries an earlier run cached (--resume)
        "reused_in_run": reused,  # checkpoints whose weights equal one probed earlier in this run
        "checkpoints": records,
    }


def finish_gate(config: GateConfig, inputs: GateInputs, fingerprint: dict[str, Any], records: list[dict[str, Any]],
                decisions: dict[str, Decision], resumed: int, reused: list[str], cache: ResultCache,
                notice: Callable[[str], None], distributed: dict[str, Any] | None = None) -> dict[str, Any]:
    """Say what was resumed and reused, decide the gate, write gate.json and report.html.

    `distributed` (the process group's description) goes into the provenance of a sharded run.
    Raises OutputError naming the cache, where every result stays, when a report cannot be written.
    """
    if config.resume:
        notice(f"resumed {resumed} of {len(config.checkpoints)} checkpoints from cache ({cache.folder})")
    if reused:
        notice(f"reused this run's result for {len(reused)} checkpoint(s) with identical weights: {', '.join(reused)}")
    verdict = overall(decisions)
    report = build_report(config, fingerprint, inputs.concept, inputs.reference, inputs.probe_config, records, verdict,
                          resumed, inputs.device, reused=len(reused))
    if distributed is not None:
        report["provenance"]["distributed"] = distributed
    try:
        write_reports(report, Path(config.output))
    except OutputError as error:
        raise OutputError(f"--output: {error}; all {len(records)} checkpoint result(s) are cached in "
                          f"{str(cache.folder)!r}: rerun with --resume once the output can be written, "
                          "nothing will be probed again") from None
    return report
