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

Attacks (`--attacks`, gate/attacks.py): `memory` is the probe above. `multi-memory` and
`concept-inversion` each add their part to the checkpoint's record, cached under their own key
(the memory key plus the attack's settings), reused and resumed the same way. The model is loaded
once per checkpoint, only when something has to be computed; when memory and multi-memory both
have to be computed, one search gives both (its first memory is the probe).
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
from ..files import check_writable_folder, write_text_atomic
from ..results import ProbeResult
from .attacks import CONCEPT_INVERSION_DIR, AttackSettings, concept_inversion_part, multi_memory_part
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
    attacks: AttackSettings = field(default_factory=AttackSettings)

    def __post_init__(self) -> None:
        if "memory" not in self.attacks.attacks:
            for name, flag in (("min_d_n", "--min-dn"), ("max_psnr", "--max-psnr")):
                if getattr(self.thresholds, name) is not None:
                    raise InputError(f"{flag}: a condition on the memory probe, but --attacks "
                                     f"{','.join(self.attacks.attacks)} does not run it; add memory to --attacks")
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


@dataclass(frozen=True)
class GateInputs:
    """What every gate (one process or each rank) checks and loads before any model: the device,
    the base model's source and resolution, the probe config it runs, and both image sets."""

    device: torch.device | None
    source: str
    resolution: int | None
    probe_config: ProbeConfig
    concept: ImageSet
    reference: ImageSet


def load_gate_inputs(config: "GateConfig", device_name: str | None) -> GateInputs:
    """Device, dtype, base model, probe config and both image folders, checked in that order."""
    device = check_device(device_name)
    check_dtype(config.dtype)
    source = resolve_model_source(config.model)
    resolution = model_resolution(source)
    probe_config = config.probe.replace(keep_reconstructions=config.thumbnails > 0, progress=config.progress)
    concept = load_folder(config.concept_images, "--concept-images", resolution=resolution, resize=probe_config.resize)
    reference = load_folder(config.reference_images, "--reference-images", resolution=resolution,
                            resize=probe_config.resize)
    return GateInputs(device, source, resolution, probe_config, concept, reference)


def check_output_writable(output: Path, cache: ResultCache) -> None:
    """The output folder (and its cache, when it exists) can be written: checked before any compute."""
    check_writable_folder(output, "--output")
    if cache.folder.is_dir():
        check_writable_folder(cache.folder, "--output")


def load_and_probe(source: str, checkpoint: Checkpoint, concept: ImageSet, reference: ImageSet | None,
                   probe_config: ProbeConfig, device: str | None = None, dtype: str | None = None,
                   distributed: bool | None = False) -> ProbeResult:
    """Load the base model with the checkpoint's weights on top and probe it.

    Errors of ours (bad weights, bad input, non-finite values) propagate as they are; any other
    exception inside the probe becomes a ProbeFailure naming the checkpoint (exit code 3).
    """
    model = load_checkpoint_model(source, checkpoint, device, dtype)
    with attack_failures(checkpoint, "probing"):
        return probe(model, concept, reference=reference, config=probe_config, distributed=distributed)


def load_checkpoint_model(source: str, checkpoint: Checkpoint, device: str | None = None, dtype: str | None = None):
    """The base model with the checkpoint's weights on top (a `DiffusionModel`)."""
    from ..models.loading import load_model

    weights = checkpoint.weights
    return load_model(source, unet_weights=weights.unet_weights, text_encoder=weights.text_encoder,
                      lora=weights.lora, torch_dtype=check_dtype(dtype), device=check_device(device))


class attack_failures:  # noqa: N801 - used as a context manager, reads as a phrase
    """Errors of ours propagate as they are; any other exception inside an attack becomes a
    ProbeFailure naming the checkpoint and the attack (exit code 3, not a traceback)."""

    def __init__(self, checkpoint: Checkpoint, doing: str) -> None:
        self.checkpoint, self.doing = checkpoint, doing

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: BaseException | None, trace: Any) -> bool:
        if error is None or isinstance(error, UnlearnGuardError) or not isinstance(error, Exception):
            return False
        raise ProbeFailure(f"{self.doing} {self.checkpoint.name} failed: {type(error).__name__}: {error}") from error


def load_support_folder(folder: str | os.PathLike, count: int, resolution: int | None,
                        resize: ResizePolicy = "resize") -> ImageSet:
    """The multi-memory attack's support images: a folder of images (no prompts.csv needed), at least `count`."""
    path = Path(folder)
    if not path.is_dir():
        what = "is a file" if path.exists() else "does not exist"
        raise InputError(f"--support-images: {str(path)!r} {what}; expected a folder of images of other content")
    images = load_image_set(path, "", resolution=resolution, resize=resize, label="--support-images")
    if len(images) < count:
        raise InputError(f"--support-images: {str(path)!r} holds {len(images)} images; --memories "
                         f"{count + 1} needs {count}")
    return images


def run_gate(config: GateConfig, echo: Callable[[str], None] = print,
             notice: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Gate every checkpoint of `config`; returns the report written to output/gate.json.

    `echo` receives one line per checkpoint; `notice` (default: `echo`) the lines saying how many
    checkpoints were resumed from an earlier run's cache and which reused a result of this run.
    Raises OutputError (exit code 2 on the command line) when the output cannot be written: before
    any compute when the folder is unwritable, and naming what stays cached when a later write fails.
    """
    from ..attacks.judges import load_judge

    notice = notice or echo
    settings = config.attacks
    attacks = settings.attacks
    group = distributed_work.resolve(config.distributed, "distributed")
    if group is not None:  # several ranks (torchrun, accelerate launch, srun): shard the work
        if tuple(attacks) != ("memory",):
            raise InputError(f"--attacks {','.join(attacks)}: under torchrun/accelerate launch/srun the gate shards "
                             "the memory probe only; run multi-memory and concept-inversion in one process")
        from .sharded import run_gate_sharded

        return run_gate_sharded(config, group, echo, notice)
    # 0. cheap checks before any model is loaded
    output = Path(config.output)
    check_output(output, config.resume, config.overwrite)
    inputs = load_gate_inputs(config, config.device)
    device, source, resolution = inputs.device, inputs.source, inputs.resolution
    probe_config, concept, reference = inputs.probe_config, inputs.concept, inputs.reference
    support = None
    if "multi-memory" in attacks:
        support = load_support_folder(settings.support_images, settings.search.memories - 1, resolution,
                                      probe_config.resize)
    judge = load_judge(settings.judge) if "concept-inversion" in attacks else None
    fingerprint = model_fingerprint(source)
    cache = ResultCache(output / CACHE_DIR)
    check_output_writable(output, cache)  # before any compute, not after it
    concept_pairs = list(zip(concept.sha256, concept.prompts))
    reference_pairs = list(zip(reference.sha256, reference.prompts))
    support_hashes = [] if support is None else support.sha256[: settings.search.memories - 1]

    records, decisions, resumed, probed = [], {}, 0, 0
    this_run: dict[str, tuple[str, dict[str, Any]]] = {}  # cache key -> (checkpoint name, part) computed now
    reused: list[str] = []
    bar = tqdm(config.checkpoints, desc="gate", unit="checkpoint", disable=not config.progress or len(config.checkpoints) < 2)
    for checkpoint in bar:
        # 1. the cache key of each attack's part
        hashes = weight_hashes(checkpoint.weights)
        base = dict(fingerprint=fingerprint, weight_hashes=hashes, concept=concept_pairs, reference=reference_pairs,
                    config=probe_config.to_dict())
        thumbnails = {"thumbnails": min(config.thumbnails, len(concept))}
        keys = {attack: cache_key(base["fingerprint"], hashes, concept_pairs, reference_pairs, base["config"],
                                  extra=thumbnails if attack == "memory" else
                                  {**thumbnails, **settings.key_for(attack), "support": support_hashes})
                for attack in attacks}
        # 2. each part: reused from this run, resumed from an earlier run's cache, or computed
        parts: dict[str, dict[str, Any]] = {}
        origin: dict[str, str] = {}
        for attack, key in keys.items():
            if key in this_run:
                origin[attack] = f"reused:{this_run[key][0]}"
                parts[attack] = this_run[key][1]
            elif config.resume and (cached := cache.get(key)) is not None:
                origin[attack], parts[attack] = "cache", cached
        missing = [attack for attack in attacks if attack not in parts]
        started = time.perf_counter()
        if missing:
            model = load_checkpoint_model(source, checkpoint, config.device, config.dtype)
            if "multi-memory" in missing:
                from ..attacks.memories import find_memories

                with attack_failures(checkpoint, "the multi-memory search of"):
                    found = find_memories(model, concept, support=support, search=settings.search,
                                          reference=reference, config=probe_config.replace(keep_seeds=True))
                parts["multi-memory"] = multi_memory_part(found, concept, config.thumbnails)
                if "memory" in missing:  # the search's first memory is the probe: one computation for both
                    parts["memory"] = checkpoint_entry(checkpoint, found.probe, concept, config.thumbnails, hashes,
                                                       found.seconds.get("probe", 0.0))
            if "memory" in missing and "memory" not in parts:
                with attack_failures(checkpoint, "probing"):
                    result = probe(model, concept, reference=reference, config=probe_config)
                parts["memory"] = checkpoint_entry(checkpoint, result, concept, config.thumbnails, hashes,
                                                   time.perf_counter() - started)
            if "concept-inversion" in missing:
                with attack_failures(checkpoint, "concept inversion on"):
                    parts["concept-inversion"] = concept_inversion_part(
                        model, concept, settings, judge, probe_config.seed, config.thumbnails,
                        output / CONCEPT_INVERSION_DIR / checkpoint.name)
            for attack in missing:
                try:
                    cache.put(keys[attack], parts[attack])
                except OutputError as error:
                    raise OutputError(f"--output: {error} (the result of {checkpoint.name}); "
                                      f"{_cached_so_far(cache, probed)}") from None
                this_run[keys[attack]] = (checkpoint.name, parts[attack])
                origin[attack] = "computed"
            probed += 1
        from_cache = all(origin[a] == "cache" for a in attacks)
        reused_names = {origin[a].removeprefix("reused:") for a in attacks if origin[a].startswith("reused:")}
        reused_from = reused_names.pop() if len(reused_names) == 1 and all(origin[a].startswith("reused:")
                                                                            for a in attacks) else None
        resumed += from_cache
        if reused_from is not None:
            reused.append(f"{checkpoint.name} (same as {reused_from})")
        entry = dict(parts.get("memory") or {})
        entry.update({**checkpoint.to_dict(), "weight_sha256": hashes, "attacks": list(attacks)})
        if "multi-memory" in parts:
            entry["multi_memory"] = parts["multi-memory"]
        if "concept-inversion" in parts:
            entry["concept_inversion"] = parts["concept-inversion"]
        # 3. decide
        decision = decide(entry, config.thresholds)
        decisions[checkpoint.name] = decision
        records.append({**entry, "cache_key": keys[attacks[0]], "cache_keys": keys, "origin": origin,
                        "from_cache": from_cache, "reused_from": reused_from, **decision.to_dict()})
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
    first = {}
    if records:  # the device and dtype the attacks ran on, from whichever part recorded them
        record = records[0]
        first = ((record.get("probe") or {}).get("provenance")
                 or (((record.get("concept_inversion") or {}).get("embedding")) or {}).get("provenance")
                 or (record.get("multi_memory") or {}).get("provenance") or {})
    return {
        "kind": REPORT_KIND,
        "format_version": 3,  # 3: attacks (multi_memory, concept_inversion parts); 2: the memory score decides
        **verdict.to_dict(),
        "thresholds": config.thresholds.to_dict(config.attacks.attacks),
        "attacks": config.attacks.to_dict(),
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
    """memory M [interval], d_N [interval] (kind), mean PSNR, and each further attack's number: one
    checkpoint's numbers on one line."""
    def interval(value: Any, low: Any, high: Any) -> str:
        if value is None:
            return "not computed"
        low, high = float(low), float(high)
        return f"{float(value):.3f}" + ("" if math.isnan(low) else f" [{low:.3f}, {high:.3f}]")

    attacks = entry.get("attacks") or ["memory"]
    parts = []
    if "memory" in attacks:
        memory = entry.get("memory") or {}
        psnr_mean = entry.get("psnr_mean")
        diverged = f", {entry['diverged']} diverged" if entry.get("diverged") else ""
        parts.append(f"memory M = {interval(memory.get('value'), memory.get('ci_low'), memory.get('ci_high'))}, "
                     f"d_N = {interval(entry.get('d_n'), entry.get('ci_low'), entry.get('ci_high'))} "
                     f"({entry.get('distance_kind')}), "
                     f"mean PSNR {'-' if psnr_mean is None else f'{float(psnr_mean):.2f} dB'}{diverged}")
    if "multi-memory" in attacks:
        part = entry.get("multi_memory") or {}
        best = part.get("memory") or {}
        summary = part.get("summary") or {}
        distinct = summary.get("distinct_memories_mean")
        cosine = summary.get("mean_cosine_among")
        parts.append(f"best-of-{summary.get('memories_per_image', '?')} memory M = "
                     f"{interval(best.get('value'), best.get('ci_low'), best.get('ci_high'))}, "
                     f"{'-' if distinct is None else f'{float(distinct):.2f}'} distinct memories per image, "
                     f"cosine {'-' if cosine is None else f'{float(cosine):.3f}'}")
    if "concept-inversion" in attacks:
        part = entry.get("concept_inversion") or {}
        attack = part.get("attack") or {}
        baseline = part.get("baseline") or {}
        parts.append(f"concept inversion success = {interval(attack.get('rate'), attack.get('ci_low'), attack.get('ci_high'))}"
                     + (f" (plain prompt {float(baseline['rate']):.3f})" if baseline else ""))
    return "; ".join(parts)


def _attack_verdicts(record: dict[str, Any]) -> dict[str, Any]:
    """The further attacks' numbers for --json (no per-image data, no thumbnails)."""
    found: dict[str, Any] = {}
    if record.get("attacks"):
        found["attacks"] = record["attacks"]
    if record.get("multi_memory"):
        part = record["multi_memory"]
        summary = part.get("summary") or {}
        found["multi_memory"] = {"memory": part.get("memory") and {k: part["memory"][k] for k in ("value", "ci_low", "ci_high")},
                                 **{k: summary.get(k) for k in ("memories_per_image", "distinct_memories_mean",
                                                                "mean_cosine_among", "mean_cosine_to_own")}}
    if record.get("concept_inversion"):
        part = record["concept_inversion"]
        attack, baseline = part.get("attack") or {}, part.get("baseline") or {}
        found["concept_inversion"] = {**{k: attack.get(k) for k in ("rate", "ci_low", "ci_high", "successes", "n")},
                                      "baseline_rate": baseline.get("rate"), "saved_to": part.get("saved_to")}
    return found


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
        "checkpoints": [{**{k: record.get(k) for k in keys}, **_attack_verdicts(record)} for record in report["checkpoints"]],
    }
    if output is not None:
        verdict["report"] = {"json": str(output / GATE_JSON), "html": str(output / REPORT_HTML)}
    return verdict
