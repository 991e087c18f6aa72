"""Multi-memory search: MoFC's Sequential Inversion Block (SIB, SPEC 6), batched.

One image of an erased concept has many memories: seeds far apart that all regenerate it. The
single-memory probe finds one per image (memory 0, the image's own seed). The SIB finds more by
starting the search from *other* content:

  1. decoder inversion of each support image I_s from its encoder mean: z0(s)            (SPEC 6.1)
  2. decoder inversion from z0(s) toward the query I_q:                  z0(s->q)         (SPEC 6.2)
  3. ReNoise inversion of z0(s->q) with I_q's prompt:                    z_T(s->q)        (SPEC 6.3)
     variant "released" (the MoFC code): decode z0(s->q) to an 8-bit image and re-encode it
     (posterior sample, per-memory generator) first; variant "paper" (the paper's figure):
     invert scaling_factor * z0(s->q) directly.
  4. per memory: NLL of z_T, reconstruction PSNR against I_q, the memory value m of the
     calibrated signal; pairwise cosine distances among the memories and to the own seed (6.4).

Memory j >= 1 of image i starts from support image j (the first M-1 support images are used for
every query, as MoFC uses one support set). Step 1 runs once per support image; step 2 runs on
all (image, support) pairs as one batch (chunked) with a fixed step budget: `fidelity="mofc"` is
MoFC's 3000 Adam steps at lr 1e-2, `fidelity="fast"` (default) the cheaper budget measured in
benchmarks/memory_search.py (300 steps at a 10x larger learning rate). Every random draw of memory j of image i comes from a generator
derived from (seed, "memory<j>", i), so a batch equals its singles.

Per image, `distinct_memories` counts the memories that reconstruct it (PSNR >= the memory
score's cut, median PSNR of the reference set minus `ProbeConfig.memory_psnr_margin_db`, and
m > 0), taking them in order of m (highest first) and skipping any within cosine distance
`distinct_cosine` of one already counted (the same memory found twice).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import ProbeConfig
from ..validation import require_field
from ..errors import InputError, InsufficientDataError
from ..inversion.decoder import decode_unclamped, decoder_invert
from ..inversion.reconstruct import ddim_reconstruct
from ..inversion.renoise import Conditioning, FiniteWatch, NoisePredictor, renoise_invert
from ..schedule import DDIMSchedule, ddim_schedule
from ..io import ImageSet, load_image_set
from ..models.bundle import DiffusionModel
from ..models.module_state import preserve_module_state
from ..provenance import model_provenance, provenance
from ..signal.memory_score import image_memory, memory_score
from ..stats.functional import psnr, seed_nll
from .results import ImageMemories, Memory, MemorySearchResult

Fidelity = Literal["fast", "mofc"]
Variant = Literal["released", "paper"]
# (Adam steps, learning rate) of each decoder inversion, per fidelity. mofc: the MoFC code's 3000 steps at
# 1e-2. fast: 300 steps at 1e-1, measured in the small world (6 circles x 5 support shapes, one CPU
# thread, benchmarks/memory_search.py, RESULTS.md 2026-11-29): support -> query decodings reach 27.8 dB
# mean PSNR in 300 steps at 1e-1 against 27.2 dB in 3000 steps at 1e-2, in 48 s of decoder time against
# 591 s, and lead to as many distinct memories (2.33 vs 2.50 per image); an earlier, unrecorded run gave
# 29.8 vs 29.0 dB, and 21.0 dB for 300 steps at 1e-2. The world's latents have std 1.0; SD 1.4's unscaled latents are about 5x wider,
# where the same step size is relatively smaller.
DECODER_BUDGETS = {"mofc": (3000, 1e-2), "fast": (300, 1e-1)}
DECODER_STEPS = {name: steps for name, (steps, _) in DECODER_BUDGETS.items()}
_CPU_DECODER_BATCH = 64
_CUDA_DECODER_BATCH = 8


@dataclass(frozen=True)
class MemorySearchConfig:
    """How the multi-memory search runs (the diffusion inversion itself follows the ProbeConfig).

    Args:
        memories: M, memories per image, the image's own seed included (M - 1 support images used).
        fidelity: "fast" (default: 300 Adam steps at lr 1e-1 per decoder inversion) or "mofc"
            (MoFC's 3000 steps at lr 1e-2).
        decoder_steps: overrides the fidelity's step count.
        decoder_lr: overrides the fidelity's Adam learning rate.
        variant: "released" (decode to 8 bits and re-encode before ReNoise, as the MoFC code) or
            "paper" (invert the decoder-inverted latent directly, as the paper's figure).
        distinct_cosine: two memories closer than this cosine distance count as one.
        decoder_batch_size: (image, support) pairs per decoder-inversion chunk (None: 64 on CPU,
            8 on CUDA; an out-of-memory error halves it).
    """

    memories: int = 4
    fidelity: Fidelity = "fast"
    decoder_steps: int | None = None
    decoder_lr: float | None = None
    variant: Variant = "released"
    distinct_cosine: float = 0.1
    decoder_batch_size: int | None = None

    def __post_init__(self) -> None:
        require_field("config", isinstance(self.memories, int) and not isinstance(self.memories, bool) and self.memories >= 1,
                 "memories", self.memories, "an int >= 1 (the image's own seed counts as one)")
        require_field("config", self.fidelity in DECODER_STEPS, "fidelity", self.fidelity, "'fast' or 'mofc'")
        require_field("config", self.decoder_steps is None or (isinstance(self.decoder_steps, int) and self.decoder_steps >= 0),
                 "decoder_steps", self.decoder_steps, "None or an int >= 0")
        require_field("config", self.decoder_lr is None or (isinstance(self.decoder_lr, (int, float)) and not isinstance(self.decoder_lr, bool)
                                             and math.isfinite(self.decoder_lr) and self.decoder_lr > 0),
                 "decoder_lr", self.decoder_lr, "None or a finite number > 0")
        require_field("config", self.variant in ("released", "paper"), "variant", self.variant, "'released' or 'paper'")
        require_field("config", isinstance(self.distinct_cosine, (int, float)) and 0 <= self.distinct_cosine <= 2,
                 "distinct_cosine", self.distinct_cosine, "a number in [0, 2]")
        require_field("config", self.decoder_batch_size is None or (isinstance(self.decoder_batch_size, int)
                                                     and self.decoder_batch_size >= 1),
                 "decoder_batch_size", self.decoder_batch_size, "None or an int >= 1")

    @property
    def steps(self) -> int:
        """Adam steps per decoder inversion."""
        return DECODER_BUDGETS[self.fidelity][0] if self.decoder_steps is None else self.decoder_steps

    @property
    def lr(self) -> float:
        """Adam learning rate of the decoder inversions."""
        return DECODER_BUDGETS[self.fidelity][1] if self.decoder_lr is None else float(self.decoder_lr)

    def describe(self) -> str:
        return (f"SIB, M={self.memories}, {self.variant} variant, fidelity {self.fidelity} "
                f"({self.steps} decoder steps at lr {self.lr:g})")

    def replace(self, **changes: Any) -> "MemorySearchConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise InputError(f"MemorySearchConfig has no field(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "resolved_decoder_steps": self.steps, "resolved_decoder_lr": self.lr}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MemorySearchConfig":
        data = {k: v for k, v in data.items() if not k.startswith("resolved_")}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"MemorySearchConfig: unknown fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _search_config(search: MemorySearchConfig | None, memories: int | None, fidelity: str | None,
                   variant: str | None) -> MemorySearchConfig:
    if search is not None and not isinstance(search, MemorySearchConfig):
        raise InputError(f"search: got {type(search).__name__}; expected a MemorySearchConfig")
    changes = {k: v for k, v in (("memories", memories), ("fidelity", fidelity), ("variant", variant)) if v is not None}
    return (search or MemorySearchConfig(memories=1 if memories is None else memories)).replace(**changes)


def _support_set(support: Any, count: int, resolution: int, resize: str) -> ImageSet | None:
    """The first `count` support images, validated; InputError naming `support` otherwise."""
    if count == 0:
        if support is not None:
            raise InputError("support: given, but memories=1 uses only each image's own seed; pass memories=M > 1 "
                             "to search M - 1 more memories from the support images, or drop support")
        return None
    if support is None:
        raise InputError(f"support: memories={count + 1} needs {count} support images (memory 0 is each image's own "
                         "seed; memory j >= 1 starts from support image j); got none. Pass images of other content "
                         "(a tensor, PIL images, a folder or files), or memories=1")
    if isinstance(support, str) and support.strip() == "":
        raise InputError("support: got an empty string; expected images or a folder")
    images = load_image_set(support, "", resolution=resolution, resize=resize, label="support")
    if len(images) < count:
        raise InputError(f"support: memories={count + 1} needs {count} support images; got {len(images)}")
    return ImageSet(images.pixels[:count].contiguous(), images.names[:count], images.prompts[:count],
                    images.sources[:count], images.sha256[:count])


def _decoder_batch(search: MemorySearchConfig, device: torch.device, count: int) -> int:
    if search.decoder_batch_size is not None:
        return min(search.decoder_batch_size, count)
    return min(_CUDA_DECODER_BATCH if device.type == "cuda" else _CPU_DECODER_BATCH, count)


def _decoder_stage(model: DiffusionModel, targets: torch.Tensor, init: torch.Tensor, search: MemorySearchConfig,
                   names: list[str], bar: tqdm) -> torch.Tensor:
    """Decoder inversion of every row of `targets` (K, 3, H, W) in [0, 1] from `init` (K, C, h, w), chunked."""
    from ..probe import run_chunked

    def work(indices: list[int]) -> torch.Tensor:
        return decoder_invert(model.vae, targets[indices].to(model.device), init[indices].to(model.device),
                              search.steps, search.lr, [names[i] for i in indices],
                              on_step=lambda _: bar.update(len(indices))).cpu()

    chunks = run_chunked(len(targets), _decoder_batch(search, model.device, len(targets)), work)
    return torch.cat(chunks) if chunks else init[:0]


def _invert_chunk(model: DiffusionModel, z0: torch.Tensor, prompts: list[str], targets: torch.Tensor,
                  generators: list[torch.Generator], names: list[str], schedule: DDIMSchedule, config: ProbeConfig,
                  bar: tqdm) -> dict[str, Any]:
    """ReNoise inversion of clean latents z0 (b, C, h, w), reconstruction, PSNR against `targets`
    (b, 3, H, W) in [0, 1], NLL; NaN/Inf marks the item (as `probe` does) instead of raising."""
    inv = config.inversion
    predict = NoisePredictor(model, backend=config.backend)
    cond = model.encode_prompts(prompts)
    conditioning = Conditioning(cond, model.encode_prompts([""] * len(prompts)) if inv.guidance_scale > 1 else None,
                                inv.guidance_scale)
    watch = FiniteWatch(len(prompts), z0.device, names)
    seeds = renoise_invert(predict, z0, conditioning, schedule, inv, generators, names, config.check_finite,
                           on_step=lambda _: bar.update(len(prompts)), watch=watch)
    diverged: list[str | None] = [None if s is None else f"inversion at t={schedule.timesteps[s]}"
                                  for s in watch.diverged_steps()]
    found = [i for i, why in enumerate(diverged) if why is None]
    nll = torch.full((len(prompts),), math.nan, dtype=torch.float64)
    values = torch.full((len(prompts),), math.nan, dtype=torch.float64)
    reconstructions = torch.zeros((len(prompts), *targets.shape[1:]), dtype=torch.float32)
    if found:
        if inv.reconstruction_guidance_scale != inv.guidance_scale:
            conditioning = Conditioning(cond, model.encode_prompts([""] * len(prompts))
                                        if inv.reconstruction_guidance_scale > 1 else None,
                                        inv.reconstruction_guidance_scale)
        recon_watch = FiniteWatch(len(found), seeds.device, [names[i] for i in found])
        clean = ddim_reconstruct(predict, seeds[found].contiguous(), conditioning.subset(found), schedule,
                                 [names[i] for i in found], config.check_finite,
                                 on_step=lambda _: bar.update(len(prompts)), watch=recon_watch)
        ok = []
        for position, step in enumerate(recon_watch.diverged_steps()):
            if step is None:
                ok.append(found[position])
            else:
                diverged[found[position]] = f"reconstruction at t={schedule.timesteps[step]}"
        nll[found] = seed_nll(seeds[found], backend=config.backend).cpu()
        if ok:
            decoded = model.decode_latents(clean[[found.index(i) for i in ok]])  # (r, 3, H, W) in [0, 1]
            values[ok] = psnr(decoded, targets[ok].to(decoded.device), quantize=config.quantize_psnr,
                              backend=config.backend).cpu()
            reconstructions[ok] = decoded.cpu()
    else:
        bar.update(len(prompts) * schedule.num_steps)
    return {"seeds": seeds.cpu(), "nll": nll, "psnr": values, "diverged": diverged, "reconstructions": reconstructions}


def _cosine_matrix(seeds: torch.Tensor) -> torch.Tensor:
    """(M, M) float64 cosine distances 1 - cos of the flattened seeds (M, ...); NaN where a seed is missing."""
    flat = seeds.flatten(1).double()
    unit = flat / flat.norm(dim=1, keepdim=True)
    return 1.0 - unit @ unit.T


def _distinct(memory: list[float | None], reconstructs: list[bool], cosine: torch.Tensor, threshold: float) -> list[bool]:
    """Which memories count as distinct: in order of m (highest first, then index), a reconstructing
    memory counts unless it lies within `threshold` cosine distance of one already counted."""
    order = sorted(range(len(memory)), key=lambda j: (-(memory[j] or 0.0), j))
    counted: list[int] = []
    for j in order:
        if reconstructs[j] and all(float(cosine[j, k]) >= threshold for k in counted):
            counted.append(j)
    return [j in counted for j in range(len(memory))]


def _decoder_inversions(model: DiffusionModel, support_set: ImageSet, targets: torch.Tensor, pairs: list[tuple[int, int]],
                        pair_names: list[str], search: MemorySearchConfig, config: ProbeConfig) -> torch.Tensor:
    """Steps 1-2: each support image from its encoder mean, then each (image, support) pair toward
    its query `targets` (P, 3, H, W) in [0, 1]; z0(s->q) (P, C, h, w), unscaled, on the CPU."""
    extra = len(support_set)
    support_targets = (support_set.pixels + 1) / 2
    with tqdm(total=search.steps * (extra + len(pairs)), desc=f"decoder inversion ({search.fidelity})",
              unit="step", disable=not config.progress, leave=False) as bar:
        support_mean = torch.cat([model.encode_images(support_set.pixels[k : k + 1], None, mode="mean")
                                  for k in range(extra)]) / model.scaling_factor  # (S, C, h, w) unscaled
        z_support = _decoder_stage(model, support_targets, support_mean, search, support_set.names, bar)
        return _decoder_stage(model, targets, z_support[[j for _, j in pairs]], search, pair_names, bar)


def _diffusion_inversions(model: DiffusionModel, queries: ImageSet, pairs: list[tuple[int, int]], pair_names: list[str],
                          z_pairs: torch.Tensor, decoded: torch.Tensor, targets: torch.Tensor,
                          search: MemorySearchConfig, config: ProbeConfig) -> dict[str, Any]:
    """Steps 3-4 for every pair, per chunk: diffusion inversion of z0(s->q) with the query's prompt
    (re-encoded from the 8-bit decoding `decoded` in variant "released"), reconstruction, NLL, PSNR."""
    from ..probe import image_generators, run_chunked

    schedule = ddim_schedule(model.scheduler_config, config.inversion.num_steps)
    with tqdm(total=len(pairs) * 2 * schedule.num_steps, desc=f"memories ({config.preset})",
              unit="img-step", disable=not config.progress, leave=False) as bar:
        def work(indices: list[int]) -> dict[str, Any]:
            generators = [image_generators(config, f"memory{pairs[k][1] + 1}", [pairs[k][0]])[0]
                          for k in indices]
            if search.variant == "released":  # decode to 8 bits and re-encode (the MoFC code)
                pixels = (decoded[indices].clamp(0, 1) * 255).round() / 255 * 2 - 1
                z0 = model.encode_images(pixels, generators, mode=config.inversion.z0_mode)
                if config.rng == "released":
                    from ..probe import consume_released_extra_draws

                    consume_released_extra_draws(generators, z0.shape[1:])
            else:  # invert the decoder-inverted latent directly (the paper's figure)
                z0 = z_pairs[indices].to(model.device) * model.scaling_factor
            return _invert_chunk(model, z0.float(), [queries.prompts[pairs[k][0]] for k in indices],
                                 targets[indices], generators, [pair_names[k] for k in indices],
                                 schedule, config, bar)

        batch = min(config.batch_size or (16 if model.device.type == "cuda" else 4), len(pairs))
        chunks = run_chunked(len(pairs), batch, work)
    return {key: (torch.cat([c[key] for c in chunks]) if key != "diverged" else [d for c in chunks for d in c[key]])
            for key in chunks[0]}


def _search_support(model: DiffusionModel, queries: ImageSet, support_set: ImageSet, search: MemorySearchConfig,
                    config: ProbeConfig, seconds: dict[str, float], started: float) -> tuple[dict[str, Any], torch.Tensor]:
    """Memories 1..M-1 of every image (steps 1-4), with the weights frozen: (per-pair seeds, NLL,
    PSNR, divergence and reconstructions, decoder PSNR (P,) float64). Adds the stage times to `seconds`."""
    extra = search.memories - 1
    pairs = [(i, j) for i in range(len(queries)) for j in range(extra)]  # memory j + 1 of image i
    pair_names = [f"{queries.names[i]} from {support_set.names[j]}" for i, j in pairs]
    targets = ((queries.pixels + 1) / 2)[[i for i, _ in pairs]]  # (P, 3, H, W) in [0, 1]
    with preserve_module_state(*model.modules()):
        for module in model.modules():
            module.requires_grad_(False)  # gradients reach the latents only; flags come back on exit
        z_pairs = _decoder_inversions(model, support_set, targets, pairs, pair_names, search, config)
        seconds["decoder_inversion"] = time.perf_counter() - started - seconds["probe"]
        with torch.no_grad():
            decoded = torch.cat([decode_unclamped(model.vae, z_pairs[k : k + 16].to(model.device)).cpu()
                                 for k in range(0, len(pairs), 16)])  # (P, 3, H, W), unclamped
            decoder_psnr = psnr(decoded.clamp(0, 1), targets, quantize=config.quantize_psnr)
            found = _diffusion_inversions(model, queries, pairs, pair_names, z_pairs, decoded, targets, search, config)
        seconds["diffusion_inversion"] = time.perf_counter() - started - sum(seconds.values())
    return found, decoder_psnr


def _all_seeds(single: Any, found: dict[str, Any], extra: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeds (Q, M, C, h, w) and reconstructions (Q, M, 3, H, W): memory 0 from the single probe, then the found ones."""
    own_seeds = single.erased.seeds  # (Q, C, h, w)
    seeds = own_seeds[:, None].clone()
    reconstructions = single.erased.reconstructions[:, None].clone()
    if extra:
        q = len(own_seeds)
        seeds = torch.cat([seeds, found["seeds"].view(q, extra, *own_seeds.shape[1:])], dim=1)
        reconstructions = torch.cat([reconstructions, found["reconstructions"].view(q, extra, *reconstructions.shape[2:])],
                                    dim=1)
    return seeds, reconstructions


def _image_memories(i: int, queries: ImageSet, support_set: ImageSet | None, single: Any, found: dict[str, Any],
                    decoder_psnr: torch.Tensor, seeds: torch.Tensor, search: MemorySearchConfig
                    ) -> tuple[ImageMemories, tuple[float, float] | None]:
    """Image i's memories (NLL, PSNR, m, reconstructs, distinct), and (NLL, PSNR) of its best
    memory (highest m, then lowest index); None without the single probe's memory score."""
    extra, anchors = search.memories - 1, single.memory
    own = single.erased.images[i]
    nll = [own.nll] + [float(found["nll"][i * extra + j]) for j in range(extra)]
    values = [own.psnr] + [float(found["psnr"][i * extra + j]) for j in range(extra)]
    diverged = [own.diverged] + [found["diverged"][i * extra + j] for j in range(extra)]
    m: list[float | None] = [None] * search.memories
    reconstructs: list[bool | None] = [None] * search.memories
    distinct: list[bool | None] = [None] * search.memories
    cosine = _cosine_matrix(seeds[i])
    count = best = None
    if anchors is not None:
        per = image_memory(np.asarray(nll), np.asarray(values), anchors.nll_reference_mean, anchors.nll_normal_mean,
                           anchors.psnr_cut, anchors.nll_normal_std, anchors.typical_sigmas)
        m = [float(v) for v in per]
        reconstructs = [bool(values[j] >= anchors.psnr_cut and m[j] > 0) for j in range(search.memories)]
        flags = _distinct(m, [bool(r) for r in reconstructs], cosine, search.distinct_cosine)
        distinct = list(flags)
        count = int(sum(flags))
        j_best = max(range(search.memories), key=lambda j: (m[j], -j))
        best = (nll[j_best], values[j_best])
    memories_i = [Memory(index=j, support=None if j == 0 else support_set.names[j - 1], nll=nll[j], psnr=values[j],
                         decoder_psnr=None if j == 0 else float(decoder_psnr[i * extra + j - 1]), memory=m[j],
                         reconstructs=reconstructs[j], distinct=distinct[j], diverged=diverged[j])
                  for j in range(search.memories)]
    euclid = (seeds[i].flatten(1).double() - seeds[i, 0].flatten().double()).norm(dim=1)
    return ImageMemories(name=queries.names[i], prompt=queries.prompts[i], sha256=queries.sha256[i],
                         memories=memories_i, cosine=cosine.tolist(), euclidean_to_own=euclid.tolist(),
                         distinct_memories=count), best


def _best_of_m_score(best_nll: list[float], best_psnr: list[float], single: Any,
                     config: ProbeConfig) -> tuple[Any, str | None]:
    """The memory score of each image's best memory against the single probe's R and N sets:
    (score, None), or (None, why) when there are too few numbers for it."""
    reference_part = single.reference
    try:
        return memory_score(best_nll, best_psnr, reference_part.nll, reference_part.psnr, single.normal_nll,
                            psnr_margin_db=config.memory_psnr_margin_db, bootstrap_samples=config.bootstrap_samples,
                            confidence=config.confidence, seed=anchors_seed(config),
                            typical_sigmas=config.memory_typical_sigmas), None
    except InsufficientDataError as error:
        return None, f"best-of-M memory score not computed: {error}"


def find_memories(
    model: Any,
    images: Any,
    prompts: str | list[str] | dict[str, str] | None = None,
    *,
    support: Any = None,
    memories: int | None = None,
    reference: Any = None,
    reference_prompts: str | list[str] | dict[str, str] | None = None,
    config: ProbeConfig | str | None = None,
    search: MemorySearchConfig | None = None,
    fidelity: Fidelity | None = None,
    variant: Variant | None = None,
    normal_nll: Any = None,
    **overrides: Any,
) -> MemorySearchResult:
    """Find M memories per image of the (erased) concept: its own seed and M - 1 found from support images.

    Args:
        model: a `DiffusionModel`, a diffusers Stable Diffusion pipeline, or a hub id / local folder.
        images / prompts: the query images I_q of the concept and their prompts, as `probe` takes them.
        support: images of other content I_s (any form `probe` takes; prompts are not needed): the
            first M - 1 are used. Required when M > 1.
        memories: M, memories per image including the image's own seed (default 1, or `search.memories`).
        reference / reference_prompts: the reference set R, as `probe`; needed for the memory value m
            of each memory, the count of distinct memories and the best-of-M memory score.
        config: the ProbeConfig of every diffusion inversion (preset name or config; default "mofc").
        search: a `MemorySearchConfig`; `memories`, `fidelity` and `variant` override its fields.
        normal_nll: an external N set, as `probe`.
        **overrides: ProbeConfig fields (seed=1, batch_size=2, progress=False, ...).
    Returns:
        MemorySearchResult: per image its memories (NLL, PSNR, m, distinct or not), the cosine
        distance matrix, the single-memory probe and the best-of-M memory score.
    """
    from ..probe import as_model, probe, resolve_config

    config = resolve_config(config, overrides)
    search = _search_config(search, memories, fidelity, variant)
    model = as_model(model)
    model.check()
    # 0. check every input before any compute (probe re-checks the images it receives, cheaply)
    queries = load_image_set(images, prompts, resolution=model.resolution, resize=config.resize, label="images")
    support_set = _support_set(support, search.memories - 1, model.resolution, config.resize)
    reference_set = None
    if reference is not None:
        reference_set = load_image_set(reference, reference_prompts, resolution=model.resolution,
                                       resize=config.resize, label="reference")
    started = time.perf_counter()
    # memory 0: the single-memory probe (own seeds, R, N, d_N, the memory score)
    single = probe(model, queries, reference=reference_set, config=config.replace(keep_seeds=True,
                   keep_reconstructions=True), normal_nll=normal_nll)
    seconds = {"probe": time.perf_counter() - started}
    q, extra = len(queries), search.memories - 1
    found: dict[str, Any] = {}
    decoder_psnr = torch.full((q * extra,), math.nan, dtype=torch.float64)
    if extra:  # 1.-4. memories 1..M-1 from the support images
        found, decoder_psnr = _search_support(model, queries, support_set, search, config, seconds, started)
    # 4. assemble: seeds (Q, M, C, h, w), per-memory numbers, distances, m, distinct counts
    seeds, reconstructions = _all_seeds(single, found, extra)
    notes = list(single.notes)
    if single.memory is None and reference_set is not None:
        notes.append("memory values m not computed: the single-memory probe has no memory score")
    results, best_nll, best_psnr = [], [], []
    for i in range(q):
        image, best = _image_memories(i, queries, support_set, single, found, decoder_psnr, seeds, search)
        results.append(image)
        if best is not None:
            best_nll.append(best[0])
            best_psnr.append(best[1])
    best_score = None
    if single.memory is not None:
        best_score, why_not = _best_of_m_score(best_nll, best_psnr, single, config)
        notes.extend([why_not] if why_not else [])
    diverged_count = sum(1 for d in found.get("diverged", []) if d)
    if diverged_count:
        notes.append(f"{diverged_count} of {q * extra} support-started memories diverged (NaN/Inf) and count as none")
    seconds["total"] = time.perf_counter() - started
    return MemorySearchResult(
        images=results, probe=single, memory=best_score, search=search, seconds=seconds, notes=notes,
        provenance={**provenance(model.device, model.dtype, seed=config.seed, **model_provenance(model)),
                    "support": [] if support_set is None else
                    [{"name": n, "sha256": h} for n, h in zip(support_set.names, support_set.sha256)]},
        seeds=seeds if config.keep_seeds else None,
        reconstructions=reconstructions if config.keep_reconstructions else None,
    )


def anchors_seed(config: ProbeConfig) -> int:
    """The bootstrap seed of the best-of-M memory score (its own stream, beside the probe's)."""
    from ..probe import derive_seed

    return derive_seed(config.seed, "memory_best_bootstrap", 0)
