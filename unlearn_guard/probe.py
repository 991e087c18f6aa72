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
import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from . import distributed as distributed_work
from .config import PRESETS, RELEASED_NORMAL_SEED, ProbeConfig
from .errors import InputError, InsufficientDataError, NonFiniteError, ProbeFailure  # noqa: F401 - ProbeFailure re-exported
from .inversion.reconstruct import ddim_reconstruct
from .inversion.renoise import Conditioning, FiniteWatch, NoisePredictor, check_finite_latents, renoise_invert
from .inversion.schedule import DDIMSchedule, ddim_schedule
from .io import ImageSet, load_image_set
from .kernels.dispatch import resolve_backend
from .models.bundle import DiffusionModel
from .models.checks import check_finite_weights, warn_long_prompts
from .models.module_state import preserve_module_state
from .provenance import provenance
from .results import ImageProbe, ProbeResult, SetProbe
from .signal.memory_score import MemoryScoreResult, memory_score
from .stats.functional import MemoryDistanceResult, memory_distance, normal_nll_set, psnr, seed_nll

_CPU_AUTO_BATCH = 4
_CUDA_AUTO_BATCH = 16


def derive_seed(seed: int, label: str, index: int) -> int:
    """A 63-bit seed for one image of one set: independent of batching and of the other images."""
    digest = hashlib.sha256(f"unlearn_guard:{seed}:{label}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def image_generators(config: ProbeConfig, label: str, indices: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per image: seeded from (seed, set, index), or in rng="released" mode a
    fresh generator seeded with `image_seed` (42) for every image, as the released code does."""
    released_seed = config.image_generator_seed
    if released_seed is not None:
        return [torch.Generator().manual_seed(released_seed) for _ in indices]
    return [torch.Generator().manual_seed(derive_seed(config.seed, label, i)) for i in indices]


def consume_released_extra_draws(generators: Sequence[torch.Generator], latent_shape: Sequence[int]) -> None:
    """The released pipeline's two randn draws of the latent's shape after the posterior sample
    (img2img's noise and the inversion's stored noise); neither is used, both move the stream."""
    for generator in generators:
        for _ in range(2):
            torch.randn((1, *latent_shape), generator=generator)


def normal_set(config: ProbeConfig, seed_shape: tuple[int, ...]) -> torch.Tensor:
    """NLLs of the N set for this config (SPEC 4): (n_normal,) float64."""
    if config.rng == "released":
        seed = RELEASED_NORMAL_SEED if config.normal_seed is None else config.normal_seed
        return normal_nll_set(seed_shape, config.n_normal, seed, one_at_a_time=True)
    seed = derive_seed(config.seed, "normal", 0) if config.normal_seed is None else config.normal_seed
    return normal_nll_set(seed_shape, config.n_normal, seed)


def resolve_config(config: ProbeConfig | str | None, overrides: dict[str, Any]) -> ProbeConfig:
    if config is None:
        config = "mofc"
    if isinstance(config, str):
        return ProbeConfig.from_preset(config, **overrides)
    if not isinstance(config, ProbeConfig):
        raise InputError(f"config: got {type(config).__name__}; expected a ProbeConfig or one of {sorted(PRESETS)}")
    return config.replace(**overrides) if overrides else config


def as_model(model: Any) -> DiffusionModel:
    """Accept a DiffusionModel, a diffusers pipeline, or a hub id / local folder."""
    if isinstance(model, DiffusionModel):
        return model
    if hasattr(model, "unet") and hasattr(model, "vae"):
        return DiffusionModel.from_pipeline(model)
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        from .models.loading import load_model

        return load_model(model)
    raise InputError(
        f"model: got {type(model).__name__}; expected a DiffusionModel, a StableDiffusionPipeline, "
        "or a hub id / local pipeline folder"
    )


def check_normal_nll(values: Any) -> torch.Tensor:
    """An external N set as (n,) float64: 1-D, at least 2 finite numbers; InputError otherwise."""
    try:
        tensor = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as error:
        raise InputError(f"normal_nll: expected a 1-D sequence of numbers, got {type(values).__name__}") from error
    if tensor.dim() != 1 or tensor.numel() < 2:
        raise InputError(f"normal_nll: expected a 1-D sequence of at least 2 NLLs, got shape {tuple(tensor.shape)}")
    bad = torch.nonzero(~torch.isfinite(tensor)).flatten().tolist()
    if bad:
        raise InputError(f"normal_nll: NaN or Inf at indices {bad[:10]}; expected finite NLLs")
    return tensor


def auto_batch_size(config: ProbeConfig, device: torch.device, count: int) -> int:
    if config.batch_size is not None:
        return min(config.batch_size, count)
    return min(_CUDA_AUTO_BATCH if device.type == "cuda" else _CPU_AUTO_BATCH, count)


def _is_out_of_memory(error: BaseException) -> bool:
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom_type is not None and isinstance(error, oom_type)) or "out of memory" in str(error).lower()


def run_chunked(
    count: int,
    batch_size: int,
    work: Callable[[list[int]], Any],
    on_retry: Callable[[int], None] | None = None,
) -> list[Any]:
    """Run `work(indices)` over chunks of `batch_size`; on out-of-memory halve the chunk and retry."""
    outputs: list[Any] = []
    start = 0
    while start < count:
        indices = list(range(start, min(start + batch_size, count)))
        try:
            outputs.append(work(indices))
        except Exception as error:  # noqa: BLE001 - only OOM is handled, the rest re-raised
            if not _is_out_of_memory(error):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if batch_size == 1:
                raise ProbeFailure(f"out of memory at batch size 1 (image index {start}): {error}") from error
            batch_size = max(1, batch_size // 2)
            if on_retry is not None:
                on_retry(batch_size)
            continue
        start = indices[-1] + 1
    return outputs


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
    batch_size = auto_batch_size(config, model.device, len(images))
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


def measure_memory(
    erased: SetProbe, reference: SetProbe, normal: torch.Tensor, config: ProbeConfig
) -> tuple[MemoryDistanceResult | None, MemoryScoreResult | None, list[str]]:
    """d_N (SPEC 5, over the images whose inversion found a seed) and the memory score (every
    image; a diverged one holds no memory), each None with a note when its data are too few."""
    notes = []
    nll_e, nll_r = erased.nll, reference.nll
    found_e, found_r = nll_e[~torch.isnan(nll_e)], nll_r[~torch.isnan(nll_r)]
    distance = None
    if len(found_e) >= 2 and len(found_r) >= 2:
        distance = memory_distance(
            found_e, found_r, normal, kind=config.distance, bootstrap_samples=config.bootstrap_samples,
            confidence=config.confidence, seed=derive_seed(config.seed, "bootstrap", 0),
        )
    else:
        notes.append(f"d_N not computed: it needs 2 seeds per set, and the inversion found {len(found_e)} of "
                     f"{len(nll_e)} (E) and {len(found_r)} of {len(nll_r)} (R)")
    memory = None
    try:
        memory = memory_score(
            nll_e, erased.psnr, nll_r, reference.psnr, normal, psnr_margin_db=config.memory_psnr_margin_db,
            bootstrap_samples=config.bootstrap_samples, confidence=config.confidence,
            seed=derive_seed(config.seed, "memory_bootstrap", 0),
        )
    except InsufficientDataError as error:
        notes.append(f"memory score not computed: {error}")
    for part in (erased, reference):
        count = int(part.diverged.sum())
        if count:
            notes.append(f"{count} of {len(part.images)} {part.label} image(s) diverged (NaN/Inf) and found no memory: "
                         + ", ".join(f"{i.name} ({i.diverged})" for i in part.images if i.diverged)[:500])
    return distance, memory, notes


def prepare_model(model: Any, config: ProbeConfig) -> tuple[DiffusionModel, str]:
    """The model, checked (parts together, finite weights), and the fused ops' backend resolved now:
    a Triton request that can't run fails before any compute."""
    model = as_model(model)
    model.check()
    check_finite_weights(model)  # a diverged LoRA is named as the weights' fault, before any inversion
    return model, resolve_backend(config.backend, torch.empty(0, device=model.device), op="probe")


def load_probe_sets(model: DiffusionModel, images: Any, prompts: Any, reference: Any, reference_prompts: Any,
                    config: ProbeConfig, warn_stacklevel: int | None = 4) -> dict[str, ImageSet]:
    """{"erased": E} or {"erased": E, "reference": R}, validated (sizes, prompts, 2+ images each for d_N).

    Prompts the text encoder cuts are warned about at `warn_stacklevel` (4: the line that called
    `probe`); None: no warning.
    """
    sets = {"erased": load_image_set(images, prompts, resolution=model.resolution, resize=config.resize, label="images")}
    if reference is not None:
        sets["reference"] = load_image_set(
            reference, reference_prompts, resolution=model.resolution, resize=config.resize, label="reference"
        )
        for label, part in (("images (E)", sets["erased"]), ("reference (R)", sets["reference"])):
            if len(part) < 2:
                raise InsufficientDataError(
                    f"d_N needs at least 2 images in each set; {label} has {len(part)}. "
                    "Add images, or probe without `reference` to get per-image NLL and PSNR only"
                )
    if warn_stacklevel is not None:
        warn_long_prompts(model, {"images": sets["erased"], "reference": sets.get("reference")}, stacklevel=warn_stacklevel)
    return sets


def seed_shape_of(model: DiffusionModel, images: ImageSet) -> tuple[int, int, int]:
    """z_T's shape (C, h, w) for these images: what the N set is drawn in."""
    factor = model.vae_scale_factor
    return model.latent_channels, images.pixels.shape[-2] // factor, images.pixels.shape[-1] // factor


def finish_probe(erased_result: SetProbe, reference_result: SetProbe | None, seed_shape: tuple[int, ...],
                 config: ProbeConfig, external_normal: torch.Tensor | None, provenance_record: dict[str, Any]) -> ProbeResult:
    """Steps 4-5 on measured sets: the N set, d_N and the memory score, and the `ProbeResult`."""
    parts = [erased_result] + ([reference_result] if reference_result is not None else [])
    if all(bool(part.diverged.all()) for part in parts):
        raise NonFiniteError(
            f"every image's inversion or reconstruction diverged (NaN/Inf), e.g. {erased_result.images[0].name}: "
            f"{erased_result.images[0].diverged}; nothing was measured"
        )
    normal = normal_set(config, seed_shape) if external_normal is None else external_normal
    distance, memory, notes = None, None, []
    if reference_result is not None:
        distance, memory, notes = measure_memory(erased_result, reference_result, normal, config)
    return ProbeResult(
        erased=erased_result,
        reference=reference_result,
        memory_distance=distance,
        memory=memory,
        notes=notes,
        normal_nll=normal,
        config=config,
        provenance={**provenance_record, "normal_set": "external" if external_normal is not None else "drawn"},
    )


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
        **overrides: ProbeConfig fields to replace (e.g. seed=1, batch_size=2, progress=False).
    Returns:
        ProbeResult with per-image NLL and PSNR, d_N with its interval (when R is given),
        the config and provenance. `result.to_json(path)` writes it.
    """
    config = resolve_config(config, overrides)
    group = distributed_work.resolve(distributed)
    if group is not None:
        return _probe_sharded(group, model, images, prompts, reference, reference_prompts, config, normal_nll)
    model, fused_ops = prepare_model(model, config)
    external_normal = None if normal_nll is None else check_normal_nll(normal_nll)
    # 0. validate everything before any compute
    sets = load_probe_sets(model, images, prompts, reference, reference_prompts, config)
    schedule = ddim_schedule(model.scheduler_config, config.inversion.num_steps)
    with preserve_module_state(*model.modules()), torch.no_grad():
        runner = with_compiled_unet(model) if config.compile_unet else model
        results = {label: probe_image_set(runner, images_, config, label, schedule) for label, images_ in sets.items()}
    record = provenance(model.device, model.dtype, seed=config.seed, model_source=model.source, fused_ops=fused_ops,
                        distributed=distributed_work.describe(None))
    return finish_probe(results["erased"], results.get("reference"), seed_shape_of(model, sets["erased"]), config,
                        external_normal, record)


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
        sizes = {label: auto_batch_size(config, checked.device, len(part)) for label, part in sets.items()}
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
        record = provenance(checked.device, checked.dtype, seed=config.seed, model_source=checked.source,
                            fused_ops=fused_ops) if group.is_main else None
        return {"outputs": outputs, "seconds": time.perf_counter() - started, "provenance": record}

    parts = group.gather(produce, "the probe")
    outputs = [output for part in parts for output in part["outputs"]]
    results = sets_from_units(outputs, local["sets"], config)
    record = {**parts[0]["provenance"], "distributed": {**group.describe(), "units": local["units"],
                                                         "wall_seconds": max(part["seconds"] for part in parts)}}
    return finish_probe(results["erased"], results.get("reference"), local["seed_shape"], config, local["normal"], record)
