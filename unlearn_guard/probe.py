"""`probe`: does an erased model still remember? Invert, reconstruct, measure (SPEC 2-5).

Order of work (each step cites the SPEC):
  0. Check every input before any compute: model parts, finite weights, images, prompts (and
     their length), sizes, set sizes.
  1. Per chunk of images: text embeddings c, z0 from the VAE (sample or mean, per-image generator).
  2. ReNoise inversion z0 -> z_T (SPEC 2).
  3. DDIM reconstruction z_T -> z0', decode, PSNR against the input (SPEC 3).
  4. NLL(z_T) under N(0, I) (SPEC 4).
  5. With a reference set R: the same for R, then d_N = D(E, N) / D(R, N) with a bootstrap
     interval (SPEC 5).
The model's weights, `requires_grad` flags and train/eval modes are left exactly as found.
A CUDA out-of-memory error halves the chunk and retries; results do not depend on chunking
because every random draw comes from a generator derived from (seed, set, image index).
With `distributed=True` (torchrun, accelerate launch, srun) each rank runs its share of the
chunks (`ProbeUnit`, cut where one process cuts them, so the numbers are the same bit for bit on
CPU) and `unlearn_guard.distributed` gathers them; every rank then does steps 4-5 on all images.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from . import distributed as distributed_work
from .config import ProbeConfig
from .errors import InputError, ProbeFailure
from .inversion.reconstruct import ddim_reconstruct
from .inversion.renoise import Conditioning, FiniteWatch, NoisePredictor, check_finite_latents, renoise_invert
from .schedule import DDIMSchedule, ddim_schedule
from .io import ImageSet
from .models.bundle import DiffusionModel
from .models.module_state import preserve_module_state
from .probe_batching import auto_batch_size, image_pixels, run_chunked
from .probe_inputs import (
    as_model,
    check_normal_nll,
    load_probe_sets,
    prepare_model,
    resolve_config,
    seed_shape_of,
)
from .probe_measure import finish_probe, measure_memory, normal_set
from .probe_seeds import consume_released_extra_draws, derive_seed, image_generators
from .provenance import model_provenance, provenance
from .results import ImageProbe, ProbeResult, SetProbe
from .stats.functional import psnr, seed_nll


def with_compiled_unet(model: DiffusionModel, backend: str = "inductor") -> DiffusionModel:
    """The same model with its UNet behind `torch.compile` (shares the weights; the original
    module is not modified). Shapes are fixed per chunk (batch B and 2B), so each compiles once.
    Worth it on CUDA; on CPU the compile (minutes) outweighs a short probe."""
    return dataclasses.replace(model, unet=torch.compile(model.unet, dynamic=False, backend=backend))


def _conditioning(model: DiffusionModel, prompts: Sequence[str], guidance: float) -> Conditioning:
    cond = model.encode_prompts(prompts)
    uncond = model.encode_prompts([""] * len(prompts)) if guidance > 1.0 else None
    return Conditioning(cond, uncond, guidance)


def _probe_chunk(
    model: DiffusionModel,
    images: ImageSet,
    indices: list[int],
    schedule: DDIMSchedule,
    config: ProbeConfig,
    label: str,
    bar: tqdm,
) -> dict[str, Any]:
    inv = config.inversion
    names = [images.names[i] for i in indices]
    prompts = [images.prompts[i] for i in indices]
    pixels = images.pixels[indices]  # (b, 3, H, W) in [-1, 1]
    released = config.rng == "released"
    if released:
        # diffusers' preprocessing hands the VAE a channels_last tensor, and every later latent
        # inherits that layout; the convolutions' rounding, and so the seeds, depend on it.
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    generators = image_generators(config, label, indices)
    predict = NoisePredictor(model, backend=config.backend)
    # 1. conditioning and z0 (SPEC 2.1-2.2)
    if released:
        # The released code encodes each image alone; the VAE's convolutions round differently
        # at other batch sizes, and an inversion can amplify a 1e-5 change in z0 to 1e-1 in z_T.
        z0 = torch.cat([model.encode_images(pixels[i : i + 1], [g], mode=inv.z0_mode) for i, g in enumerate(generators)])
        consume_released_extra_draws(generators, z0.shape[1:])
    else:
        z0 = model.encode_images(pixels, generators, mode=inv.z0_mode)  # (b, C, h, w) float32
    if config.check_finite:
        check_finite_latents(z0, names, "after VAE encoding")
    conditioning = _conditioning(model, prompts, inv.guidance_scale)
    # 2. ReNoise inversion (SPEC 2.3-2.5); NaN/Inf is tracked per image on the device.
    steps = schedule.num_steps
    watch = FiniteWatch(len(indices), z0.device, names) if config.check_finite else None
    seeds = renoise_invert(
        predict, z0, conditioning, schedule, inv, generators, names, config.check_finite,
        on_step=lambda _: bar.update(len(indices)), watch=watch,
    )
    describe_inversion = lambda i: f"during inversion at timestep t={schedule.timesteps[i]} (step {i + 1}/{steps})"  # noqa: E731
    if watch is not None and config.strict:
        watch.check(describe_inversion)
    diverged: list[str | None] = [
        None if step is None else describe_inversion(step).removeprefix("during ")
        for step in (watch.diverged_steps() if watch is not None else [None] * len(indices))
    ]
    found = [i for i, why in enumerate(diverged) if why is None]  # images whose inversion found a seed
    # 3. reconstruction and PSNR (SPEC 3), for the images with a seed
    if inv.reconstruction_guidance_scale != inv.guidance_scale:
        conditioning = _conditioning(model, prompts, inv.reconstruction_guidance_scale)
    recon_watch = FiniteWatch(len(found), seeds.device, [names[i] for i in found]) if config.check_finite else None
    if found:
        clean = ddim_reconstruct(
            predict, seeds[found].contiguous(), conditioning.subset(found), schedule, [names[i] for i in found],
            config.check_finite, on_step=lambda _: bar.update(len(indices)), watch=recon_watch,
        )
    else:  # every inversion of the chunk diverged: nothing to reconstruct
        clean = seeds[:0]
        bar.update(len(indices) * steps)
    describe_reconstruction = lambda i: f"during reconstruction at timestep t={schedule.timesteps[i]}"  # noqa: E731
    if recon_watch is not None and config.strict:
        recon_watch.check(describe_reconstruction)
    reconstructed = []
    for position, step in enumerate(recon_watch.diverged_steps() if recon_watch is not None else [None] * len(found)):
        if step is None:
            reconstructed.append(found[position])
        else:
            diverged[found[position]] = describe_reconstruction(step).removeprefix("during ")
    keep = [found.index(i) for i in reconstructed]
    if reconstructed:
        decoded = model.decode_latents(clean[keep])  # (r, 3, H, W) in [0, 1]
        target = (pixels[reconstructed].to(decoded.device).float() + 1) / 2
    # 4. NLL of each found seed (SPEC 4); nan where no seed or no reconstruction was found.
    nll = torch.full((len(indices),), math.nan, dtype=torch.float64)
    psnr_values = torch.full((len(indices),), math.nan, dtype=torch.float64)
    if found:
        nll[found] = seed_nll(seeds[found], backend=config.backend).cpu()
    if reconstructed:
        psnr_values[reconstructed] = psnr(decoded, target, quantize=config.quantize_psnr, backend=config.backend).cpu()
    reconstructions = None
    if config.keep_reconstructions:
        reconstructions = torch.zeros((len(indices), *pixels.shape[1:]), dtype=torch.float32)
        reconstructions[reconstructed] = decoded.cpu()
    return {
        "seeds": seeds.cpu(),
        "nll": nll,
        "psnr": psnr_values,
        "diverged": diverged,
        "reconstructions": reconstructions,
        "evaluations": predict.evaluations,
    }


def probe_image_set(
    model: DiffusionModel,
    images: ImageSet,
    config: ProbeConfig,
    label: str = "erased",
    schedule: DDIMSchedule | None = None,
) -> SetProbe:
    """Invert, reconstruct and measure one image set (no d_N). Inputs must be validated already."""
    schedule = schedule or ddim_schedule(model.scheduler_config, config.inversion.num_steps)
    batch_size = auto_batch_size(config, model.device, len(images), image_pixels(images))
    started = time.perf_counter()
    with tqdm(
        total=len(images) * 2 * schedule.num_steps,
        desc=f"probe {label} ({config.preset})",
        unit="img-step",
        disable=not config.progress,
        leave=False,
    ) as bar:
        def on_retry(new_size: int) -> None:
            bar.write(f"out of memory: retrying {label} with batch size {new_size}")

        chunks = run_chunked(
            len(images), batch_size, lambda idx: _probe_chunk(model, images, idx, schedule, config, label, bar), on_retry
        )
    return assemble_set(label, images, chunks, time.perf_counter() - started, config)


def assemble_set(label: str, images: ImageSet, chunks: Sequence[dict[str, Any]], seconds: float,
                 config: ProbeConfig) -> SetProbe:
    """One set's `SetProbe` from its chunks' outputs (`_probe_chunk`), in image order."""
    nll = torch.cat([c["nll"] for c in chunks])
    psnr_values = torch.cat([c["psnr"] for c in chunks])
    diverged = [why for c in chunks for why in c["diverged"]]
    if len(nll) != len(images):
        raise ProbeFailure(f"{label}: results for {len(nll)} of {len(images)} images; expected every image once")
    per_image = [
        ImageProbe(images.names[i], images.prompts[i], images.sources[i], images.sha256[i], float(nll[i]),
                   float(psnr_values[i]), diverged[i])
        for i in range(len(images))
    ]
    return SetProbe(
        label=label,
        images=per_image,
        unet_evaluations=sum(c["evaluations"] for c in chunks),
        seconds=seconds,
        seeds=torch.cat([c["seeds"] for c in chunks]) if config.keep_seeds else None,
        reconstructions=torch.cat([c["reconstructions"] for c in chunks]) if config.keep_reconstructions else None,
    )


# ------------------------------------------------------------------------------ sharded work
@dataclass(frozen=True)
class ProbeUnit:
    """One chunk of one image set: the unit of work a rank takes.

    `indices` are image positions in the set, cut exactly where a one-process run cuts its
    chunks (`probe_units`), so a sharded probe computes every image in the same batch as one
    process does and gets the same numbers. `tag` says which model (the gate's checkpoint).
    """

    label: str
    indices: tuple[int, ...]
    tag: Any = None


def probe_units(label: str, count: int, batch_size: int, tag: Any = None) -> list[ProbeUnit]:
    """The chunks of `count` images that `probe_image_set` makes at `batch_size`, as units."""
    return [ProbeUnit(label, tuple(range(start, min(start + batch_size, count))), tag)
            for start in range(0, count, batch_size)]


def run_unit(model: DiffusionModel, images: ImageSet, unit: ProbeUnit, schedule: DDIMSchedule, config: ProbeConfig,
             batch_size: list[int], bar: tqdm | None = None) -> dict[str, Any]:
    """Probe one unit (CPU results, `_probe_chunk`'s dict plus "label", "indices", "seconds").

    `batch_size` is a one-item list this rank carries from unit to unit: an out-of-memory error
    halves it for this unit and the ones after, as `probe_image_set` does within a set.
    """
    started = time.perf_counter()
    bar = bar if bar is not None else tqdm(disable=True)
    chunks = run_chunked(
        len(unit.indices), min(batch_size[0], len(unit.indices)),
        lambda positions: _probe_chunk(model, images, [unit.indices[p] for p in positions], schedule, config,
                                       unit.label, bar),
        lambda new_size: batch_size.__setitem__(0, new_size),
    )
    merged: dict[str, Any] = {
        "label": unit.label,
        "indices": unit.indices,
        "nll": torch.cat([c["nll"] for c in chunks]),
        "psnr": torch.cat([c["psnr"] for c in chunks]),
        "diverged": [why for c in chunks for why in c["diverged"]],
        "evaluations": sum(c["evaluations"] for c in chunks),
        "seeds": torch.cat([c["seeds"] for c in chunks]) if config.keep_seeds else None,
        "reconstructions": torch.cat([c["reconstructions"] for c in chunks]) if config.keep_reconstructions else None,
    }
    merged["seconds"] = time.perf_counter() - started
    return merged


def sets_from_units(outputs: Sequence[dict[str, Any]], sets: dict[str, ImageSet],
                    config: ProbeConfig) -> dict[str, SetProbe]:
    """Each set's `SetProbe` from the outputs of its units (any order, from any rank).

    `seconds` of a set is the sum of its units' seconds: compute time, comparable with one
    process; the wall time of a sharded run is in the provenance.
    """
    result = {}
    for label, images in sets.items():
        mine = sorted((o for o in outputs if o["label"] == label), key=lambda o: o["indices"][0] if o["indices"] else 0)
        result[label] = assemble_set(label, images, mine, sum(o["seconds"] for o in mine), config)
    return result


def probe(
    model: Any,
    images: Any,
    prompts: str | Sequence[str] | dict[str, str] | None = None,
    *,
    reference: Any = None,
    reference_prompts: str | Sequence[str] | dict[str, str] | None = None,
    config: ProbeConfig | str | None = None,
    normal_nll: Any = None,
    distributed: bool | None = False,
    measured: dict[str, SetProbe] | None = None,
    **overrides: Any,
) -> ProbeResult:
    """Probe an (erased) model with images of the erased concept; optionally against a reference set.

    Args:
        model: a `DiffusionModel`, a diffusers Stable Diffusion pipeline, or a hub id / local folder.
        images: images of the erased concept E: a tensor (N, 3, H, W) in [0, 1], PIL images,
            a folder (with prompts.csv unless `prompts` is given) or a list of files.
        prompts: one prompt for all, one per image, or {file name: prompt}.
        reference / reference_prompts: the reference set R (other content), same forms. Needed for d_N.
        config: a `ProbeConfig` or a preset name ("mofc" default, "fast", "ddim").
            `config="mofc", rng="released"` reproduces the released code's random stream bit
            for bit (see `ProbeConfig.rng`).
        normal_nll: an external N set, (n,) NLLs of N(0, I) draws of z_T's shape (n >= 2), e.g.
            the list a published run used; replaces the N set drawn from the config.
        distributed: False (default): this process probes everything. True: every rank of the
            initialised torch.distributed group calls `probe` with the same arguments, inverts its
            slice of the images and gets the same `ProbeResult`, equal to a one-process run (see
            `unlearn_guard.distributed`); only rank 0 writes it with `to_json(path)`. None: True
            when a group of more than one rank is initialised. `provenance["distributed"]` records
            the group (world size, backend) and whether the work was sharded.
        measured: {"reference": SetProbe} (or "control"): a set that an earlier probe of the same
            model with the same config measured, taken as it is instead of inverting it again, e.g.
            R when several concept sets are probed against one reference set (`result.reference`
            of the first). Every random draw of a set comes from (seed, set, image index) and its
            chunks are cut by its own size, so its numbers do not depend on the other sets. It must
            hold the same images (SHA-256 and prompt, in order); that model and config are the same
            is the caller's to ensure (the gate keys it by both). One process only.
        **overrides: ProbeConfig fields to replace (e.g. seed=1, batch_size=2, progress=False).
    Returns:
        ProbeResult with per-image NLL and PSNR, d_N with its interval (when R is given),
        the config and provenance. `result.to_json(path)` writes it.
    """
    config = resolve_config(config, overrides)
    group = distributed_work.resolve(distributed)
    if group is not None:
        if measured:
            raise InputError("measured: sets measured before are taken by a one-process probe only (distributed=False)")
        return _probe_sharded(group, model, images, prompts, reference, reference_prompts, config, normal_nll)
    # warned at the caller of probe: warn <- load_probe_sets <- _probe_in_process <- here
    return _probe_in_process(model, images, prompts, reference, reference_prompts, config, normal_nll, measured,
                             warn_stacklevel=5)


def _probe_in_process(
    model: Any,
    images: Any,
    prompts: Any,
    reference: Any,
    reference_prompts: Any,
    config: ProbeConfig,
    normal_nll: Any,
    measured: dict[str, SetProbe] | None,
    warn_stacklevel: int,
) -> ProbeResult:
    """`probe` in this process alone, with the sets in `measured` taken as they are (see `probe`)."""
    model, fused_ops = prepare_model(model, config)
    external_normal = None if normal_nll is None else check_normal_nll(normal_nll)
    # 0. validate everything before any compute
    sets = load_probe_sets(model, images, prompts, reference, reference_prompts, config, warn_stacklevel=warn_stacklevel)
    known = {label: _measured_set(label, part, sets.get(label)) for label, part in (measured or {}).items()}
    schedule = ddim_schedule(model.scheduler_config, config.inversion.num_steps)
    with preserve_module_state(*model.modules()), torch.no_grad():
        runner = with_compiled_unet(model) if config.compile_unet else model
        results = {label: known[label] if label in known else probe_image_set(runner, images_, config, label, schedule)
                   for label, images_ in sets.items()}
    record = provenance(model.device, model.dtype, seed=config.seed, **model_provenance(model), fused_ops=fused_ops,
                        distributed=distributed_work.describe(None), loaded_weights=list(model.loaded_weights))
    return finish_probe(results["erased"], results.get("reference"), seed_shape_of(model, sets["erased"]), config,
                        external_normal, record, results.get("control"))


def _measured_set(label: str, part: SetProbe, images: ImageSet | None) -> SetProbe:
    """`part`, measured before, for this call's set `label`: the same images (SHA-256, prompt) in order,
    renamed to this call's names and sources; InputError otherwise."""
    if images is None or label == "erased" or not isinstance(part, SetProbe):
        raise InputError(f"measured: got {label!r}: {type(part).__name__}; expected a SetProbe for a set this probe "
                         "measures beside the concept images ('reference', or 'control')")
    theirs = [(image.sha256, image.prompt) for image in part.images]
    if theirs != list(zip(images.sha256, images.prompts)):
        raise InputError(f"measured: the {label} set given holds other images or prompts than this probe's "
                         f"{label} set ({len(theirs)} measured, {len(images)} here)")
    renamed = [dataclasses.replace(image, name=name, source=source)
               for image, name, source in zip(part.images, images.names, images.sources)]
    return dataclasses.replace(part, label=label, images=renamed)


def _probe_sharded(group: "distributed_work.Session", model: Any, images: Any, prompts: Any, reference: Any,
                   reference_prompts: Any, config: ProbeConfig, normal_nll: Any) -> ProbeResult:
    """`probe` on every rank of `group`: each checks the inputs and inverts its units, the outputs
    are gathered, and every rank assembles the same result (rank 0's provenance)."""
    local: dict[str, Any] = {}

    def produce() -> dict[str, Any]:
        started = time.perf_counter()
        checked, fused_ops = prepare_model(model, config)
        local["normal"] = None if normal_nll is None else check_normal_nll(normal_nll)
        # warned once, by rank 0, at the caller of probe: warn <- load_probe_sets <- produce <- gather <- here <- probe
        sets = local["sets"] = load_probe_sets(checked, images, prompts, reference, reference_prompts, config,
                                               warn_stacklevel=7 if group.is_main else None)
        local["seed_shape"] = seed_shape_of(checked, sets["erased"])
        schedule = ddim_schedule(checked.scheduler_config, config.inversion.num_steps)
        sizes = {label: auto_batch_size(config, checked.device, len(part), image_pixels(part)) for label, part in sets.items()}
        units = [unit for label, part in sets.items() for unit in probe_units(label, len(part), sizes[label])]
        local["units"] = len(units)
        mine = [units[i] for i in group.shard([len(unit.indices) for unit in units])]
        outputs = []
        batch_size = [max(sizes.values())]
        with tqdm(total=sum(len(u.indices) for u in mine) * 2 * schedule.num_steps,
                  desc=f"probe rank {group.rank} of {group.world_size} ({config.preset})", unit="img-step",
                  disable=not (config.progress and group.is_main), leave=False) as bar, \
                preserve_module_state(*checked.modules()), torch.no_grad():
            runner = with_compiled_unet(checked) if config.compile_unet else checked
            for unit in mine:
                group.check()  # a rank that failed or died stops this one too
                outputs.append(run_unit(runner, sets[unit.label], unit, schedule, config, batch_size, bar))
        record = provenance(checked.device, checked.dtype, seed=config.seed, **model_provenance(checked),
                            fused_ops=fused_ops, loaded_weights=list(checked.loaded_weights)) if group.is_main else None
        return {"outputs": outputs, "seconds": time.perf_counter() - started, "provenance": record}

    parts = group.gather(produce, "the probe")
    outputs = [output for part in parts for output in part["outputs"]]
    results = sets_from_units(outputs, local["sets"], config)
    record = {**parts[0]["provenance"], "distributed": {**group.describe(), "units": local["units"],
                                                         "wall_seconds": max(part["seconds"] for part in parts)}}
    return finish_probe(results["erased"], results.get("reference"), local["seed_shape"], config, local["normal"], record,
                        results.get("control"))


__all__ = [  # the probe's parts live in probe_inputs, probe_seeds, probe_batching, probe_measure
    "ProbeFailure",
    "ProbeUnit",
    "as_model",
    "assemble_set",
    "auto_batch_size",
    "check_normal_nll",
    "consume_released_extra_draws",
    "derive_seed",
    "finish_probe",
    "image_generators",
    "image_pixels",
    "load_probe_sets",
    "measure_memory",
    "normal_set",
    "prepare_model",
    "probe",
    "probe_image_set",
    "probe_units",
    "resolve_config",
    "run_chunked",
    "run_unit",
    "seed_shape_of",
    "sets_from_units",
    "with_compiled_unet",
]
