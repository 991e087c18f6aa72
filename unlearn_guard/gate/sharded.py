"""The release gate on several ranks (torchrun, accelerate launch, srun): same report, less wall time.

`run_gate` hands over here when a process group of more than one rank is initialised. Order of
work, each step one `Session.gather` (unlearn_guard.distributed), so an error or a dead rank on
any rank stops every rank within a bounded time:
  0. Every rank loads and checks the image folders (and, for adversarial-prompt, the prompts CSV,
     the target folder and the judge); rank 0 also checks the output folder, hashes every
     checkpoint's weights, and plans each attack's part: reuse a result of this run (identical
     weights), take one from the cache (--resume), or compute. The plans go to every rank.
  1. memory: the checkpoints to probe go in rounds, each round with at least as many units (chunks
     of concept or reference images, cut where one process cuts them) as there are ranks. Each rank
     loads the checkpoints its slice of the round touches and probes its units. Rank 0 turns a
     gathered round into results, d_N and memory scores.
  2. adversarial-prompt: one checkpoint at a time, each rank attacks a contiguous slice of the
     prompts (the base model makes its slice's targets when no folder gives them); rank 0
     assembles the gathered slices into the part (gate/adversarial.py).
     Rank 0 caches each gathered result atomically at the start of the next gather, and on the
     way out when a rank fails or the launcher stops it: a rank that dies loses the work in flight
     at most.
  3. utility: each rank measures a contiguous share of the sampling settings, on the base model
     once (unless --resume finds its scores) and then on each checkpoint in turn; rank 0 puts the
     gathered rows together and compares them with the base's (gate/utility.py).
  4. Rank 0 decides, writes gate.json and report.html, and every rank returns the same report.
The numbers equal a one-process run's (each image is computed in the same batch; each prompt's
attack draws from its own generator; each setting's generations are the same batches); only the
timings and the "distributed" records differ.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from .. import distributed as distributed_work
from ..controls import control_set
from ..errors import OutputError
from ..io import ImageSet
from ..models.checks import warn_long_prompts
from ..probe import (
    ProbeUnit,
    auto_batch_size,
    finish_probe,
    image_pixels,
    prepare_model,
    probe_units,
    run_unit,
    seed_shape_of,
    sets_from_units,
)
from ..schedule import ddim_schedule
from ..provenance import model_provenance, provenance
from ..utility import UtilityScores, load_clip, measure_settings, utility_provenance
from .adversarial import adversarial_part, attack_slice, check_prompts_fit, load_adversarial_inputs, run_config
from .cache import ResultCache
from .checkpoints import Checkpoint, model_fingerprint, weight_hashes
from .finish import assemble_entry, checkpoint_entry, decided_record, finish_gate
from .inputs import BASE_MODEL, GateConfig, attack_failures, load_base_model, load_checkpoint_model, load_gate_inputs
from .output import CACHE_DIR, check_output, check_output_writable
from .plan import PartKeys, item_origin, origin_summary, part_plan
from .render import checkpoint_line
from .utility import BaseUtility

# Gathered work rank 0 has not cached yet: (attack, checkpoint indices, every rank's output).
Pending = list[tuple[str, list[int], list[Any]]]

def _rounds(plan: list[dict[str, Any]], units_per_checkpoint: int, world_size: int) -> list[list[int]]:
    """Checkpoint indices to probe, grouped so each round has at least `world_size` units."""
    rounds, current = [], []
    for item in plan:
        if item["action"] != "compute":
            continue
        current.append(item["index"])
        if len(current) * units_per_checkpoint >= world_size:
            rounds.append(current)
            current = []
    if current:
        rounds.append(current)
    return rounds


def _trim(output: dict[str, Any], thumbnails: int) -> dict[str, Any]:
    """Send only the reconstructions a report shows (the first `thumbnails` concept images)."""
    recon = output.get("reconstructions")
    if recon is None:
        return output
    keep = sum(1 for i in output["indices"] if output["label"] == "erased" and i < thumbnails)
    return {**output, "reconstructions": recon[:keep], "reconstruction_shape": tuple(recon.shape)}


def _pad(output: dict[str, Any]) -> dict[str, Any]:
    shape = output.get("reconstruction_shape")
    if shape is None:
        return output
    full = torch.zeros(shape, dtype=output["reconstructions"].dtype)
    full[: len(output["reconstructions"])] = output["reconstructions"]
    return {**output, "reconstructions": full}


def _cached_line(cache: ResultCache, count: int) -> str:
    if count == 0:
        return "no checkpoint had finished in this run"
    return f"the {count} checkpoint result(s) finished in this run are cached in {str(cache.folder)!r}: rerun with --resume"


def run_gate_sharded(config: GateConfig, group: distributed_work.Session, echo: Callable[[str], None],
                     notice: Callable[[str], None]) -> dict[str, Any]:
    """`run_gate` on every rank of `group`; every rank returns the report rank 0 wrote."""
    main = group.is_main
    output = Path(config.output)
    attacks = config.attacks.attacks
    cache = ResultCache(output / CACHE_DIR)
    local: dict[str, Any] = {"cached": 0, "probing": False, "device_name": distributed_work.local_device(config.device)}

    # 0. checks on every rank; output checks, hashes and the plans on rank 0
    def prepare() -> dict[str, Any] | None:
        if main:
            check_output(output, config.resume, config.overwrite)
        inputs = load_gate_inputs(config, local["device_name"])
        sets = {"erased": inputs.concept, "reference": inputs.reference}
        control = control_set(inputs.probe_config, inputs.concept.pixels.shape[-1], inputs.concept.prompts)
        if control is not None:  # the negative control, as the one-process gate's probe makes it
            sets["control"] = control
        local.update(inputs=inputs, sets=sets, adversarial=None)
        if "adversarial-prompt" in attacks:  # every rank attacks a slice: each reads the prompts and judges
            from ..attacks.judges import load_judge

            local["judge"] = load_judge(config.attacks.judge)
            local["adversarial"] = load_adversarial_inputs(config.attacks, local["judge"], inputs.resolution)
        if not main:
            return None
        local["fingerprint"] = model_fingerprint(inputs.source, config.model_config)
        check_output_writable(output, cache)
        base_known = False
        if "utility" in attacks:  # the base's scores, once per run; --resume may find them cached
            local["base_utility"] = BaseUtility(config.attacks.utility, local["fingerprint"], cache, config.resume)
            base_known = local["base_utility"].known() is not None
        keys = PartKeys.of_run(config, inputs, local["fingerprint"], adversarial=local["adversarial"])
        hashes = [weight_hashes(checkpoint.weights) for checkpoint in config.checkpoints]
        plans, local["entries"] = {}, {}
        for attack in attacks:
            plans[attack], local["entries"][attack] = part_plan(config, keys, cache, attack, hashes)
        return {"plans": plans, "base_utility_known": base_known}

    pending: Pending = []
    try:
        prepared = group.gather(prepare, "the gate's checks")[0]
        plans = prepared["plans"]
        local["probing"] = True
        if "memory" in plans:
            _probe_rounds(config, plans, local, group, cache, pending)
        if "adversarial-prompt" in plans:
            _attack_checkpoints(config, plans, local, group, cache, pending)
        if "utility" in plans:
            _check_utility(config, plans, prepared["base_utility_known"], local, group, cache, pending)

        # 4. decide and report on rank 0; every rank returns the same report
        def report() -> dict[str, Any] | None:
            if not main:
                return None
            _cache_pending(pending, plans, config, cache, group, local)
            return _decide_and_write(config, plans, local, group, echo, notice, cache)

        return group.gather(report, "the gate's report")[0]
    except (distributed_work.RankFailure, distributed_work.LauncherStopped) as error:
        if not local["probing"]:
            raise
        also = ""
        if main and pending:  # work gathered before the failure, not cached yet (the launcher's SIGTERM can
            try:              # come before the next gather would have cached it): keep it for --resume
                _cache_pending(pending, plans, config, cache, group, local)
            except Exception as failure:  # noqa: BLE001 - the rank failure stays the error; this is said beside it
                also = f" (caching the work gathered before it failed too: {type(failure).__name__}: {failure})"
        where = _cached_line(cache, local["cached"]) if main else "rank 0 cached each finished checkpoint: rerun with --resume"
        raise type(error)(f"{error}; {where}{also}", error.exit_code, error.ranks) from error


def _probe_rounds(config: GateConfig, plans: dict[str, list[dict[str, Any]]], local: dict[str, Any],
                  group: distributed_work.Session, cache: ResultCache, pending: Pending) -> None:
    """1. The checkpoints to probe, round by round over every rank; each gathered round joins
    `pending`, which rank 0 caches at the start of the next gather."""
    probe_config, sets = local["inputs"].probe_config, local["sets"]
    device = local["inputs"].device
    kind = device.type if device is not None else "cpu"
    sizes = {label: auto_batch_size(probe_config, torch.device(kind), len(part), image_pixels(part))
             for label, part in sets.items()}
    per_checkpoint = sum(len(probe_units(label, len(part), sizes[label])) for label, part in sets.items())
    rounds = _rounds(plans["memory"], per_checkpoint, group.world_size)
    bar = tqdm(total=len(rounds), desc=f"gate on {group.world_size} ranks", unit="round",
               disable=not (config.progress and group.is_main) or len(rounds) < 2)
    for number, indices in enumerate(rounds, 1):
        names = ", ".join(config.checkpoints[i].name for i in indices)

        def produce(indices: list[int] = indices) -> dict[str, Any]:
            if group.is_main:
                _cache_pending(pending, plans, config, cache, group, local)
            units = [unit for i in indices for label, part in sets.items()
                     for unit in probe_units(label, len(part), sizes[label], tag=i)]
            mine = [units[k] for k in group.shard([len(unit.indices) for unit in units])]
            return _probe_units(mine, config, local, group)

        parts = group.gather(produce, f"checkpoint round {number} of {len(rounds)} ({names})")
        pending.append(("memory", indices, parts))
        bar.update(1)
    bar.close()


def _attack_checkpoints(config: GateConfig, plans: dict[str, list[dict[str, Any]]], local: dict[str, Any],
                        group: distributed_work.Session, cache: ResultCache, pending: Pending) -> None:
    """2. The checkpoints to attack with adversarial prompts, one at a time over every rank, each rank
    a contiguous slice of the prompts; each gathered checkpoint joins `pending`."""
    todo = [item["index"] for item in plans["adversarial-prompt"] if item["action"] == "compute"]
    prompts = len(local["adversarial"].prompts)
    for number, index in enumerate(todo, 1):
        checkpoint = config.checkpoints[index]

        def produce(checkpoint: Checkpoint = checkpoint) -> dict[str, Any]:
            if group.is_main:
                _cache_pending(pending, plans, config, cache, group, local)
            return _attack_mine(checkpoint, group.shard([1] * prompts), config, local, group)

        slices = group.gather(produce, f"adversarial prompts, checkpoint {number} of {len(todo)} ({checkpoint.name})")
        pending.append(("adversarial-prompt", [index], slices))


def _attack_mine(checkpoint: Checkpoint, mine: range, config: GateConfig, local: dict[str, Any],
                 group: distributed_work.Session) -> dict[str, Any]:
    """This rank's slice of the prompts attacked on the checkpoint's model (nothing loaded for an empty slice)."""
    inputs, adversarial = local["inputs"], local["adversarial"]
    attack_config = run_config(config.attacks, inputs.probe_config.seed, config.thumbnails)
    if len(mine) == 0:
        return attack_slice(None, None, adversarial, attack_config, local["judge"], mine, config.thumbnails, False)
    model = load_checkpoint_model(inputs.source, checkpoint, local["device_name"], config.dtype, config.model_config)
    check_prompts_fit(model, adversarial, attack_config)
    if adversarial.targets is None and local.get("base_model") is None:
        local["base_model"] = load_base_model(inputs.source, local["device_name"], config.dtype, config.model_config)
    with attack_failures(checkpoint, "the adversarial-prompt attack on"):
        return attack_slice(model, local.get("base_model"), adversarial, attack_config, local["judge"], mine,
                            config.thumbnails, config.progress and group.is_main)


def _check_utility(config: GateConfig, plans: dict[str, list[dict[str, Any]]], base_known: bool,
                   local: dict[str, Any], group: distributed_work.Session, cache: ResultCache,
                   pending: Pending) -> None:
    """3. The utility check over every rank, each a contiguous share of the sampling settings: the
    base model first (unless its scores are known), then each checkpoint to compute, which joins
    `pending`; rank 0 keeps the base's scores and caches them."""
    todo = [item["index"] for item in plans["utility"] if item["action"] == "compute"]
    if not todo:
        return
    settings = len(config.attacks.utility.settings)

    def share(checkpoint: Checkpoint | None) -> dict[str, Any]:
        if group.is_main:
            _cache_pending(pending, plans, config, cache, group, local)
        return _measure_mine(checkpoint, group.shard([1] * settings), config, local)

    if not base_known:
        shares = group.gather(lambda: share(None), "utility of the base model")
        if group.is_main:
            local["base_utility"].remember(_scores_from(shares, config))
    for number, index in enumerate(todo, 1):
        checkpoint = config.checkpoints[index]
        shares = group.gather(lambda checkpoint=checkpoint: share(checkpoint),
                              f"utility, checkpoint {number} of {len(todo)} ({checkpoint.name})")
        pending.append(("utility", [index], shares))


def _measure_mine(checkpoint: Checkpoint | None, mine: range, config: GateConfig,
                  local: dict[str, Any]) -> dict[str, Any]:
    """This rank's settings measured on the checkpoint's model (None: the base model); nothing is
    loaded for an empty share."""
    if len(mine) == 0:
        return {"rows": {}, "seconds": 0.0, "source": None, "provenance": None}
    inputs, utility = local["inputs"], config.attacks.utility
    started = time.perf_counter()
    checkpoint = BASE_MODEL if checkpoint is None else checkpoint
    model = load_checkpoint_model(inputs.source, checkpoint, local["device_name"], config.dtype, config.model_config)
    if utility.prompts and local.get("clip") is None:
        local["clip"] = load_clip(utility.clip_model)  # once per rank
    with attack_failures(checkpoint, "the utility check of"):
        rows = measure_settings(model, utility, mine, clip=local.get("clip"))
    return {"rows": dict(zip(mine, rows)), "seconds": time.perf_counter() - started, "source": model.source,
            "provenance": utility_provenance(model, utility)}


def _scores_from(shares: list[dict[str, Any]], config: GateConfig) -> UtilityScores:
    """Rank 0: one model's `UtilityScores` from every rank's share, in the config's setting order."""
    utility = config.attacks.utility
    rows = {index: row for share in shares for index, row in share["rows"].items()}
    source = next(share["source"] for share in shares if share["source"] is not None)
    return UtilityScores.measured(utility, [rows[i] for i in range(len(utility.settings))], source,
                                  max(share["seconds"] for share in shares))


def _utility_entry(shares: list[dict[str, Any]], config: GateConfig, group: distributed_work.Session,
                   local: dict[str, Any]) -> dict[str, Any]:
    """Rank 0: one checkpoint's utility part from every rank's share of the settings."""
    record = next(share["provenance"] for share in shares if share["provenance"] is not None)
    record = {**record, "distributed": {**group.describe(), "settings_per_rank": [len(s["rows"]) for s in shares],
                                        "seconds_per_rank": [s["seconds"] for s in shares]}}
    return local["base_utility"].part_from(_scores_from(shares, config), record)


def _load(checkpoint: Checkpoint, config: GateConfig, local: dict[str, Any]) -> Any:
    """The checkpoint's model on this rank's device, prepared for the probe; and its fused ops."""
    model = load_checkpoint_model(local["inputs"].source, checkpoint, local["device_name"], config.dtype,
                                  config.model_config)
    model, fused_ops = prepare_model(model, local["inputs"].probe_config)
    warn_long_prompts(model, local["sets"])
    return model, fused_ops


def _probe_units(units: list[ProbeUnit], config: GateConfig, local: dict[str, Any],
                 group: distributed_work.Session) -> dict[str, Any]:
    """This rank's units of a round: load each checkpoint they touch once, probe, return CPU outputs."""
    probe_config = local["inputs"].probe_config.replace(keep_seeds=False)  # the report keeps no seeds
    outputs, records, seconds = [], {}, {}
    model = None
    batch_size = [max(len(unit.indices) for unit in units)] if units else [1]
    for unit in units:
        group.check()
        checkpoint = config.checkpoints[unit.tag]
        started = time.perf_counter()
        with attack_failures(checkpoint, "probing"):  # torch/diffusers failures: a failed probe (exit code 3)
            if model is None or model[0] != unit.tag:
                model = None  # free the previous checkpoint's model before loading the next
                loaded, fused_ops = _load(checkpoint, config, local)
                model = (unit.tag, loaded, ddim_schedule(loaded.scheduler_config, probe_config.inversion.num_steps))
                records[unit.tag] = {**provenance(loaded.device, loaded.dtype, seed=probe_config.seed,
                                                  **model_provenance(loaded), fused_ops=fused_ops),
                                     "seed_shape": seed_shape_of(loaded, local["sets"]["erased"])}
            _, loaded, schedule = model
            with torch.no_grad():
                result = run_unit(loaded, local["sets"][unit.label], unit, schedule, probe_config, batch_size)
        outputs.append({**_trim(result, config.thumbnails), "tag": unit.tag})
        seconds[unit.tag] = seconds.get(unit.tag, 0.0) + time.perf_counter() - started
    return {"outputs": outputs, "records": records, "seconds": seconds}


def _cache_pending(pending: Pending, plans: dict[str, list[dict[str, Any]]], config: GateConfig,
                   cache: ResultCache, group: distributed_work.Session, local: dict[str, Any]) -> None:
    """Rank 0: turn gathered work into each checkpoint's part and cache each one."""
    entries: dict[str, dict[int, dict[str, Any]]] = local["entries"]
    while pending:
        attack, indices, parts = pending.pop(0)
        for index in indices:
            checkpoint = config.checkpoints[index]
            if attack == "memory":
                entry = _memory_entry(index, parts, plans[attack][index]["hashes"], config, group, local)
            elif attack == "utility":
                entry = _utility_entry(parts, config, group, local)
            else:
                entry = _adversarial_entry(parts, config, group, local)
            try:
                cache.put(plans[attack][index]["key"], entry)
            except OutputError as error:
                raise OutputError(f"--output: {error} (the result of {checkpoint.name}); "
                                  f"{_cached_line(cache, local['cached'])}") from None
            local["cached"] += 1
            entries[attack][index] = entry


def _memory_entry(index: int, parts: list[Any], hashes: dict[str, str], config: GateConfig,
                  group: distributed_work.Session, local: dict[str, Any]) -> dict[str, Any]:
    """Rank 0: one checkpoint's probe result from a gathered round's units."""
    sets: dict[str, ImageSet] = local["sets"]
    probe_config = local["inputs"].probe_config
    checkpoint = config.checkpoints[index]
    outputs = [_pad(o) for part in parts for o in part["outputs"] if o["tag"] == index]
    record = next(part["records"][index] for part in parts if index in part["records"])
    seed_shape = record.pop("seed_shape")
    record["distributed"] = {**group.describe(), "units": len(outputs),
                             "ranks": [r for r, part in enumerate(parts) if index in part["seconds"]]}
    results = sets_from_units(outputs, sets, probe_config.replace(keep_seeds=False))
    result = finish_probe(results["erased"], results["reference"], seed_shape, probe_config, None, record,
                          results.get("control"))
    seconds = max(part["seconds"].get(index, 0.0) for part in parts)
    return checkpoint_entry(checkpoint, result, sets["erased"], config.thumbnails, hashes, seconds)


def _adversarial_entry(slices: list[dict[str, Any]], config: GateConfig, group: distributed_work.Session,
                       local: dict[str, Any]) -> dict[str, Any]:
    """Rank 0: one checkpoint's adversarial-prompt part from every rank's slice, in rank order."""
    attack_config = run_config(config.attacks, local["inputs"].probe_config.seed, config.thumbnails)
    part = adversarial_part(slices, local["adversarial"], attack_config)
    part["provenance"] = {**part["provenance"], "distributed": {
        **group.describe(), "prompts_per_rank": [len(s["prompts"]) for s in slices],
        "seconds_per_rank": [s["seconds"].get("total", 0.0) for s in slices]}}
    return part


def _decide_and_write(config: GateConfig, plans: dict[str, list[dict[str, Any]]], local: dict[str, Any],
                      group: distributed_work.Session, echo: Callable[[str], None],
                      notice: Callable[[str], None], cache: ResultCache) -> dict[str, Any]:
    """Rank 0: the records in checkpoint order, as the one-process gate makes them; then the reports."""
    attacks = config.attacks.attacks
    entries: dict[str, dict[int, dict[str, Any]]] = local["entries"]
    records, decisions, reused, resumed = [], {}, [], 0
    for index, checkpoint in enumerate(config.checkpoints):
        items = {attack: plans[attack][index] for attack in attacks}
        parts = {attack: entries[attack][item["source"]] for attack, item in items.items()}
        origin = {attack: item_origin(item) for attack, item in items.items()}
        keys = {attack: item["key"] for attack, item in items.items()}
        from_cache, reused_from = origin_summary(origin, attacks)
        resumed += from_cache
        if reused_from is not None:
            reused.append(f"{checkpoint.name} (same as {reused_from})")
        entry = assemble_entry(checkpoint, items[attacks[0]]["hashes"], parts, attacks)
        record, decision = decided_record(entry, config, {"cache_key": keys[attacks[0]], "cache_keys": keys,
                                                          "origin": origin}, from_cache, reused_from)
        decisions[checkpoint.name] = decision
        records.append(record)
        echo(checkpoint_line(checkpoint.name, entry, decision.verdict, reused_from))
    return finish_gate(config, local["inputs"], local["fingerprint"], records, decisions, resumed, reused, cache,
                       notice, distributed=group.describe())
