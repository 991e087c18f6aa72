"""Steps 4-5 of the probe on measured sets: the N set (SPEC 4), d_N with its interval (SPEC 5),
the memory score, and the `ProbeResult` that carries them."""

from __future__ import annotations

from typing import Any

import torch

from .config import RELEASED_NORMAL_SEED, ProbeConfig
from .errors import InsufficientDataError, NonFiniteError
from .probe_seeds import derive_seed
from .results import ProbeResult, SetProbe
from .signal.memory_score import MemoryScoreResult, memory_score
from .stats.functional import MemoryDistanceResult, memory_distance, normal_nll_set


def normal_set(config: ProbeConfig, seed_shape: tuple[int, ...]) -> torch.Tensor:
    """NLLs of the N set for this config (SPEC 4): (n_normal,) float64."""
    if config.rng == "released":
        seed = RELEASED_NORMAL_SEED if config.normal_seed is None else config.normal_seed
        return normal_nll_set(seed_shape, config.n_normal, seed, one_at_a_time=True)
    seed = derive_seed(config.seed, "normal", 0) if config.normal_seed is None else config.normal_seed
    return normal_nll_set(seed_shape, config.n_normal, seed)


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
        memory = score_set(erased, reference, normal, config, "memory_bootstrap")
    except InsufficientDataError as error:
        notes.append(f"memory score not computed: {error}")
    for part in (erased, reference):
        count = int(part.diverged.sum())
        if count:
            notes.append(f"{count} of {len(part.images)} {part.label} image(s) diverged (NaN/Inf) and found no memory: "
                         + ", ".join(f"{i.name} ({i.diverged})" for i in part.images if i.diverged)[:500])
    return distance, memory, notes


def score_set(part: SetProbe, reference: SetProbe, normal: torch.Tensor, config: ProbeConfig,
              stream: str) -> MemoryScoreResult:
    """The memory score of `part` against R and N with the config's margins (raises when undefined)."""
    return memory_score(
        part.nll, part.psnr, reference.nll, reference.psnr, normal, psnr_margin_db=config.memory_psnr_margin_db,
        bootstrap_samples=config.bootstrap_samples, confidence=config.confidence,
        seed=derive_seed(config.seed, stream, 0), typical_sigmas=config.memory_typical_sigmas,
    )


def finish_probe(erased_result: SetProbe, reference_result: SetProbe | None, seed_shape: tuple[int, ...],
                 config: ProbeConfig, external_normal: torch.Tensor | None, provenance_record: dict[str, Any],
                 control_result: SetProbe | None = None) -> ProbeResult:
    """Steps 4-5 on measured sets: the N set, d_N, the memory score of E and of the negative
    control, and the `ProbeResult`."""
    parts = [erased_result] + ([reference_result] if reference_result is not None else [])
    if all(bool(part.diverged.all()) for part in parts):
        raise NonFiniteError(
            f"every image's inversion or reconstruction diverged (NaN/Inf), e.g. {erased_result.images[0].name}: "
            f"{erased_result.images[0].diverged}; nothing was measured"
        )
    normal = normal_set(config, seed_shape) if external_normal is None else external_normal
    distance, memory, notes, control_memory = None, None, [], None
    if reference_result is not None:
        distance, memory, notes = measure_memory(erased_result, reference_result, normal, config)
        if control_result is not None and memory is not None:
            control_memory = score_set(control_result, reference_result, normal, config, "control_bootstrap")
    return ProbeResult(
        erased=erased_result,
        reference=reference_result,
        memory_distance=distance,
        memory=memory,
        notes=notes,
        normal_nll=normal,
        config=config,
        control=control_result,
        control_memory=control_memory,
        provenance={**provenance_record, "normal_set": "external" if external_normal is not None else "drawn"},
    )
