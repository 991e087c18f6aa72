"""The release gate: probe each checkpoint, decide, write `gate.json` and `report.html`.

Order of work:
  0. Check everything cheap before loading any model: thresholds, device, output folder, both
     image folders (decoded, prompts matched, at least 2 images each, sized to the base model's
     resolution by the `resize` policy), every checkpoint's files; then that the output folder
     and its cache/ can be written.
  1. Per checkpoint: hash its weight files; the cache key joins them with the base model's
     fingerprint, the images' pixel hashes and prompts, and the probe config.
  2. A key this run already probed (two checkpoints with identical weights) reuses that result.
     With --resume and an entry an earlier run cached under that key: take it ("resumed").
     Otherwise load the base model with the erased weights on top, probe it (d_N, per-image
     NLL and PSNR, reconstructions), and cache the entry atomically before moving on, so an
     interruption (or a write that fails) loses one checkpoint at most.
  3. Decide per checkpoint (thresholds are applied after the cache, so changing a threshold
     never re-probes) and overall; write gate.json, then report.html, each atomically.
Under torchrun, accelerate launch or srun (a process group of 2+ ranks), `run_gate` hands over to
`gate/sharded.py`: the same steps, the probing split across the ranks, the same report.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from .. import distributed as distributed_work
from ..config import ProbeConfig, ResizePolicy
from ..errors import InputError, InsufficientDataError, OutputError, UnlearnGuardError
from ..io import ImageSet, load_image_set
from ..probe import ProbeFailure, probe
from ..provenance import package_versions, provenance
from ..results import ProbeResult, check_writable_folder, write_text_atomic
from .cache import ResultCache, cache_key
from .checkpoints import Checkpoint, model_fingerprint, weight_hashes
from .decision import Decision, Thresholds, decide, overall

GATE_JSON = "gate.json"
REPORT_HTML = "report.html"
CACHE_DIR = "cache"
REPORT_KIND = "unlearn_guard.gate"
WORLD_MODEL_NAME = "shapes-world"  # --model name of the small model shipped in the package
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_model_source(name: str) -> str:
    """`shapes-world` -> the shipped small model's pipeline folder, `shapes-world-without-<shape>`
    -> the shipped world retrained without that shape (the ground truth of unlearning); anything
    else unchanged."""
    if name == WORLD_MODEL_NAME or name.startswith(WORLD_MODEL_NAME + "-without-"):
        from ..world import WEIGHTS_DIR, retrained_world_dir

        if name == WORLD_MODEL_NAME:
            return str(WEIGHTS_DIR / "pipeline")
        return str(retrained_world_dir(name.removeprefix(WORLD_MODEL_NAME + "-without-")) / "pipeline")
    return name


def model_resolution(source: str) -> int | None:
    """The image side the base model was built for, read from its config files (no weights loaded).

    sample_size of unet/config.json times the VAE factor 2 ** (len(block_out_channels) - 1), as
    `DiffusionModel.resolution`: 512 for SD 1.4. A folder or a hub id in the local cache; None when
    the configs cannot be read (the model's loader then says why).
    """
    folder = Path(source)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(str(source), local_files_only=True))
        except Exception:  # noqa: BLE001 - not in the local cache: the loader will say so
            return None
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text())
        vae = json.loads((folder / "vae" / "config.json").read_text())
        sample_size = unet["sample_size"]
        sample_size = sample_size[0] if isinstance(sample_size, (list, tuple)) else sample_size
        return int(sample_size) * 2 ** (len(vae["block_out_channels"]) - 1)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def check_device(name: str | None) -> torch.device | None:
    """A torch.device that exists on this machine; InputError naming the device otherwise."""
    if name is None:
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as error:
        raise InputError(f"--device: {name!r} is not a device name ({error}); expected e.g. cpu, cuda, cuda:1") from None
    if device.type == "cpu":
        return device
    backend = getattr(torch, device.type, None)
    if device.type == "mps":
        backend = getattr(torch.backends, "mps", None)
    available = bool(backend is not None and getattr(backend, "is_available", lambda: False)())
    if not available:
        raise InputError(f"--device: {name!r} is not available on this machine (torch.{device.type}.is_available() "
                         "is False); use --device cpu or a device that exists")
    count = getattr(backend, "device_count", lambda: 1)()
    if device.index is not None and device.index >= count:
        raise InputError(f"--device: {name!r} does not exist; this machine has {count} {device.type} device(s)")
    return device


def check_dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    if name not in DTYPES:
        raise InputError(f"--dtype: got {name!r}; expected one of {', '.join(DTYPES)}")
    return DTYPES[name]


def existing_report(output: Path) -> list[str]:
    """What in `output` a new gate would overwrite: the report files and cached entries."""
    found = [name for name in (GATE_JSON, REPORT_HTML) if (output / name).exists()]
    cached = len(ResultCache(output / CACHE_DIR))
    if cached:
        found.append(f"{CACHE_DIR}/ ({cached} cached checkpoint results)")
    return found


def check_output(output: Path, resume: bool, overwrite: bool) -> None:
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


def load_folder(folder: str | os.PathLike, flag: str, minimum: int = 2, resolution: int | None = None,
                resize: ResizePolicy = "resize") -> ImageSet:
    """An image folder with prompts.csv, validated (decodes every image); at least 2 images for d_N.

    With `resolution` (the model's, `model_resolution`), images of another size are handled by the
    `resize` policy here, as `probe` would, so a folder of mixed sizes is accepted or refused up front.
    """
    path = Path(folder)
    if not path.is_dir():
        what = "is a file" if path.exists() else "does not exist"
        raise InputError(f"{flag}: {str(path)!r} {what}; expected a folder of images with a prompts.csv (file,prompt)")
    try:
        images = load_image_set(path, None, resolution=resolution, resize=resize, label=flag)
    except InputError as error:  # name the flag in every message (prompts.csv errors name only the file)
        if str(error).startswith(flag):
            raise
        raise type(error)(f"{flag}: {error}") from None
    if len(images) < minimum:
        raise InsufficientDataError(f"{flag}: {str(path)!r} holds {len(images)} image; d_N needs at least {minimum}")
    return images


def _cached_so_far(cache: ResultCache, probed: int) -> str:
    if probed == 0:
        return "no checkpoint had finished"
    return (f"the {probed} checkpoint result(s) probed before it stay cached in {str(cache.folder)!r}: "
            "rerun with --resume once the output can be written")


@dataclass(frozen=True)
class GateConfig:
    """One gate run. `probe` is the full ProbeConfig (preset, knobs, seed, batch size)."""

    model: str
    checkpoints: tuple[Checkpoint, ...]
    concept_images: Path
    reference_images: Path
    thresholds: Thresholds
    probe: ProbeConfig = field(default_factory=lambda: ProbeConfig.from_preset("mofc"))
    output: Path = Path("unlearn_guard_outputs/gate")
    device: str | None = None
    dtype: str | None = None
    resume: bool = False
    overwrite: bool = False
    thumbnails: int = 8
    progress: bool = True
    distributed: bool | None = None  # None: shard over an initialised group of 2+ ranks (gate/sharded.py)

    def __post_init__(self) -> None:
        if not self.checkpoints:
            raise InputError("checkpoints: nothing to gate; expected at least one checkpoint")
        names = [c.name for c in self.checkpoints]
        if len(set(names)) != len(names):
            raise InputError(f"checkpoints: names repeat ({names}); expected unique names")
        if not isinstance(self.thumbnails, int) or self.thumbnails < 0:
            raise InputError(f"--thumbnails: got {self.thumbnails!r}; expected an int >= 0")


def _image_records(images: ImageSet, folder: Path) -> dict[str, Any]:
    return {"folder": str(folder), "count": len(images),
            "images": [{"name": n, "prompt": p, "sha256": h} for n, p, h in zip(images.names, images.prompts, images.sha256)]}


def thumbnail_rows(images: ImageSet, result: ProbeResult, count: int) -> list[dict[str, str]]:
    """The first `count` concept images beside their reconstructions, as small base64 PNGs."""
    from ..report.images import png_base64

    reconstructions = result.erased.reconstructions
    if reconstructions is None or count == 0:
        return []
    rows = []
    for i in range(min(count, len(images))):
        rows.append({
            "name": images.names[i],
            "prompt": images.prompts[i],
            "image": png_base64((images.pixels[i] + 1) / 2),
            "reconstruction": png_base64(reconstructions[i]),
        })
    return rows


def _float(value: Any) -> float:
    return float(value)  # "inf"/"nan" strings from to_dict read back as floats


def checkpoint_entry(checkpoint: Checkpoint, result: ProbeResult, images: ImageSet, thumbnails: int,
                     hashes: dict[str, str], seconds: float) -> dict[str, Any]:
    """The cached part of one checkpoint's record (no decision: thresholds are applied later)."""
    md = result.memory_distance
    summary = result.erased.summary()
    memory = result.memory
    return {
        **checkpoint.to_dict(),
        "weight_sha256": hashes,
        "memory": None if memory is None else {"value": memory.value, "ci_low": memory.ci_low,
                                               "ci_high": memory.ci_high, "n_reconstructed": memory.n_reconstructed,
                                               "n_diverged": memory.n_diverged, "n_images": memory.n_images},
        "d_n": None if md is None else md.value,
        "ci_low": None if md is None else md.ci_low,
        "ci_high": None if md is None else md.ci_high,
        "confidence": None if md is None else md.confidence,
        "distance_kind": result.config.distance,
        "notes": list(result.notes),
        "diverged": summary["diverged"],
        "psnr_mean": None if summary["psnr_mean"] is None else _float(summary["psnr_mean"]),
        "nll_mean": summary["nll_mean"],
        "seconds": seconds,
        "probe": result.to_dict(),
        "normal_nll": [float(v) for v in result.normal_nll],
        "thumbnails": thumbnail_rows(images, result, thumbnails),
    }


def load_and_probe(source: str, checkpoint: Checkpoint, concept: ImageSet, reference: ImageSet | None,
                   probe_config: ProbeConfig, device: str | None = None, dtype: str | None = None,
                   distributed: bool | None = False) -> ProbeResult:
    """Load the base model with the checkpoint's weights on top and probe it.

    Errors of ours (bad weights, bad input, non-finite values) propagate as they are; any other
    exception inside the probe becomes a ProbeFailure naming the checkpoint (exit code 3).
    """
    from ..models.loading import load_model

    weights = checkpoint.weights
    model = load_model(source, unet_weights=weights.unet_weights, text_encoder=weights.text_encoder,
                       lora=weights.lora, torch_dtype=check_dtype(dtype), device=check_device(device))
    try:
        return probe(model, concept, reference=reference, config=probe_config, distributed=distributed)
    except UnlearnGuardError:
        raise
    except Exception as error:  # torch/diffusers failures inside the probe: exit code 3, not a traceback
        raise ProbeFailure(f"probing {checkpoint.name} failed: {type(error).__name__}: {error}") from error


def run_gate(config: GateConfig, echo: Callable[[str], None] = print,
             notice: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Gate every checkpoint of `config`; returns the report written to output/gate.json.

    `echo` receives one line per checkpoint; `notice` (default: `echo`) the lines saying how many
    checkpoints were resumed from an earlier run's cache and which reused a result of this run.
    Raises OutputError (exit code 2 on the command line) when the output cannot be written: before
    any compute when the folder is unwritable, and naming what stays cached when a later write fails.
    """
    notice = notice or echo
    group = distributed_work.resolve(config.distributed, "distributed")
    if group is not None:  # several ranks (torchrun, accelerate launch, srun): shard the work
        from .sharded import run_gate_sharded

        return run_gate_sharded(config, group, echo, notice)
    # 0. cheap checks before any model is loaded
    output = Path(config.output)
    check_output(output, config.resume, config.overwrite)
    device = check_device(config.device)
    check_dtype(config.dtype)
    source = resolve_model_source(config.model)
    resolution = model_resolution(source)
    probe_config = config.probe.replace(keep_reconstructions=config.thumbnails > 0, progress=config.progress)
    concept = load_folder(config.concept_images, "--concept-images", resolution=resolution, resize=probe_config.resize)
    reference = load_folder(config.reference_images, "--reference-images", resolution=resolution,
                            resize=probe_config.resize)
    fingerprint = model_fingerprint(source)
    cache = ResultCache(output / CACHE_DIR)
    check_writable_folder(output, "--output")  # before any compute, not after it
    if cache.folder.is_dir():
        check_writable_folder(cache.folder, "--output")
    concept_pairs = list(zip(concept.sha256, concept.prompts))
    reference_pairs = list(zip(reference.sha256, reference.prompts))

    records, decisions, resumed, probed = [], {}, 0, 0
    this_run: dict[str, tuple[str, dict[str, Any]]] = {}  # cache key -> (checkpoint name, entry) probed now
    reused: list[str] = []
    bar = tqdm(config.checkpoints, desc="gate", unit="checkpoint", disable=not config.progress or len(config.checkpoints) < 2)
    for checkpoint in bar:
        # 1. the cache key
        hashes = weight_hashes(checkpoint.weights)
        key = cache_key(fingerprint, hashes, concept_pairs, reference_pairs, probe_config.to_dict(),
                        extra={"thumbnails": min(config.thumbnails, len(concept))})
        # 2. reused from this run, resumed from an earlier run's cache, or probed
        reused_from = None
        from_cache = False
        if key in this_run:
            reused_from, entry = this_run[key]
            reused.append(f"{checkpoint.name} (same as {reused_from})")
        else:
            entry = cache.get(key) if config.resume else None
            from_cache = entry is not None
        if reused_from is not None or from_cache:
            resumed += from_cache
            entry = {**entry, **checkpoint.to_dict(), "weight_sha256": hashes}  # names and paths of this run
        else:
            started = time.perf_counter()
            result = load_and_probe(source, checkpoint, concept, reference, probe_config, config.device, config.dtype)
            seconds = time.perf_counter() - started
            entry = checkpoint_entry(checkpoint, result, concept, config.thumbnails, hashes, seconds)
            try:
                cache.put(key, entry)
            except OutputError as error:
                raise OutputError(f"--output: {error} (the result of {checkpoint.name}); "
                                  f"{_cached_so_far(cache, probed)}") from None
            probed += 1
            this_run[key] = (checkpoint.name, entry)
        # 3. decide
        decision = decide(entry, config.thresholds)
        decisions[checkpoint.name] = decision
        records.append({**entry, "cache_key": key, "from_cache": from_cache, "reused_from": reused_from,
                        **decision.to_dict()})
        echo(f"{checkpoint.name}: {summary_line(entry)} -> {decision.verdict.upper()}"
             + (f" (reused the result of {reused_from}: identical weights)" if reused_from else ""))
    if config.resume:
        notice(f"resumed {resumed} of {len(config.checkpoints)} checkpoints from cache ({cache.folder})")
    if reused:
        notice(f"reused this run's result for {len(reused)} checkpoint(s) with identical weights: {', '.join(reused)}")

    verdict = overall(decisions)
    report = build_report(config, fingerprint, concept, reference, probe_config, records, verdict, resumed, device,
                          reused=len(reused))
    try:
        write_reports(report, output)
    except OutputError as error:
        raise OutputError(f"--output: {error}; all {len(records)} checkpoint result(s) are cached in "
                          f"{str(cache.folder)!r}: rerun with --resume once the output can be written, "
                          "nothing will be probed again") from None
    return report


def build_report(config: GateConfig, fingerprint: dict[str, Any], concept: ImageSet, reference: ImageSet,
                 probe_config: ProbeConfig, records: list[dict[str, Any]], verdict: Decision, resumed: int,
                 device: torch.device | None, reused: int = 0) -> dict[str, Any]:
    first = records[0]["probe"]["provenance"] if records else {}
    return {
        "kind": REPORT_KIND,
        "format_version": 2,  # 2: the memory score decides (memory, notes, diverged per checkpoint)
        **verdict.to_dict(),
        "thresholds": config.thresholds.to_dict(),
        "model": fingerprint,
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


def write_reports(report: dict[str, Any], output: Path) -> tuple[Path, Path]:
    """gate.json first (the record of truth), then report.html; each written atomically."""
    from ..report.html import render_report

    json_path = write_text_atomic(output / GATE_JSON, json.dumps(report, indent=1))
    html_path = write_text_atomic(output / REPORT_HTML, render_report(report))
    return json_path, html_path


def summary_line(entry: dict[str, Any]) -> str:
    """memory M [interval], d_N [interval] (kind), mean PSNR: one checkpoint's numbers on one line."""
    def interval(value: Any, low: Any, high: Any) -> str:
        if value is None:
            return "not computed"
        low, high = float(low), float(high)
        return f"{float(value):.3f}" + ("" if math.isnan(low) else f" [{low:.3f}, {high:.3f}]")

    memory = entry.get("memory") or {}
    psnr_mean = entry.get("psnr_mean")
    diverged = f", {entry['diverged']} diverged" if entry.get("diverged") else ""
    return (f"memory M = {interval(memory.get('value'), memory.get('ci_low'), memory.get('ci_high'))}, "
            f"d_N = {interval(entry.get('d_n'), entry.get('ci_low'), entry.get('ci_high'))} ({entry.get('distance_kind')}), "
            f"mean PSNR {'-' if psnr_mean is None else f'{float(psnr_mean):.2f} dB'}{diverged}")


def verdict_json(report: dict[str, Any], output: Path | None = None) -> dict[str, Any]:
    """The machine-readable verdict `--json` prints: no per-image data, no thumbnails."""
    keys = ("name", "step", "memory", "d_n", "ci_low", "ci_high", "confidence", "distance_kind", "psnr_mean", "diverged",
            "verdict", "passed", "reasons", "from_cache", "reused_from")
    verdict = {
        "verdict": report["verdict"],
        "passed": report["passed"],
        "exit_code": 0 if report["passed"] else 1,
        "reasons": report["reasons"],
        "thresholds": report["thresholds"],
        "preset": report["config"]["preset"],
        "checkpoints": [{k: record.get(k) for k in keys} for record in report["checkpoints"]],
    }
    if output is not None:
        verdict["report"] = {"json": str(output / GATE_JSON), "html": str(output / REPORT_HTML)}
    return verdict
