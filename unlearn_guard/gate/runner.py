"""The release gate: probe each checkpoint, decide, write `gate.json` and `report.html`.

Order of work:
  0. Check everything cheap before loading any model: thresholds, device, output folder, both
     image folders (decoded, prompts matched, at least 2 images each, sized to the base model's
     resolution by the `resize` policy), every checkpoint's files; then that the output folder
     and its cache/ can be written (gate/inputs.py, gate/output.py).
  1. Per checkpoint: hash its weight files; the cache key joins them with the base model's
     fingerprint, the images' pixel hashes and prompts, and the probe config (gate/plan.py).
  2. A key this run already probed (two checkpoints with identical weights) reuses that result.
     With --resume and an entry an earlier run cached under that key: take it ("resumed").
     Otherwise load the base model with the erased weights on top, probe it (d_N, per-image
     NLL and PSNR, reconstructions), and cache the entry atomically before moving on, so an
     interruption (or a write that fails) loses one checkpoint at most.
  3. Decide per checkpoint (thresholds are applied after the cache, so changing a threshold
     never re-probes) and overall; write gate.json, then report.html, each atomically (gate/finish.py).
Under torchrun, accelerate launch or srun (a process group of 2+ ranks), `run_gate` hands over to
`gate/sharded.py`: the same steps, the probing split across the ranks, the same report.

Attacks (`--attacks`, gate/attacks.py): `memory` is the probe above. `multi-memory`,
`concept-inversion`, `adversarial-prompt` (gate/adversarial.py) and the utility check `utility`
(gate/utility.py) each add their part to the checkpoint's record, cached under their own key (the memory key plus the attack's settings and
inputs), reused and resumed the same way. The model is loaded once per checkpoint, only when
something has to be computed; when memory and multi-memory both have to be computed, one search
gives both (its first memory is the probe). The base model (--model without the checkpoint's
weights), which makes the adversarial prompts' targets when no --adv-targets folder is given and
whose utility the checkpoints' is measured against, is loaded once per run, when first needed.
Under a process group the memory probe, the adversarial-prompt attack and the utility check shard
(`SHARDED_ATTACKS`); the others run in one process.

This module holds `run_gate` (the dispatcher) and the one-process gate; the names other modules
import from here and that now live in the modules beside it stay importable from here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from .. import distributed as distributed_work
from ..errors import InputError, OutputError
from ..io import ImageSet
from ..models.bundle import module_device_dtype
from ..probe import probe
from ..results import SetProbe
from .adversarial import (
    AdversarialInputs,
    adversarial_part,
    attack_slice,
    check_prompts_fit,
    load_adversarial_inputs,
    run_config,
)
from .attacks import CONCEPT_INVERSION_DIR, concept_inversion_part, multi_memory_part
from .cache import ResultCache
from .checkpoints import Checkpoint, model_fingerprint, weight_hashes
from .decision import Decision
from .finish import assemble_entry, build_report, checkpoint_entry, decided_record, finish_gate
from .inputs import (
    DTYPES,
    WORLD_MODEL_NAME,
    GateConfig,
    GateInputs,
    attack_failures,
    check_device,
    check_dtype,
    load_and_probe,
    load_base_model,
    load_checkpoint_model,
    load_folder,
    load_gate_inputs,
    load_support_folder,
    model_resolution,
    resolve_model_source,
)
from .output import (
    CACHE_DIR,
    GATE_JSON,
    REPORT_HTML,
    SETS_DIR,
    check_output,
    check_output_writable,
    existing_report,
    write_reports,
)
from .plan import PartKeys, look_up, origin_summary
from .render import checkpoint_line, summary_line, thumbnail_rows, verdict_json
from .utility import BaseUtility
from .sharded import run_gate_sharded

__all__ = [  # run_gate and the one-process gate; the rest are re-exports from the modules beside it
    "run_gate", "run_gate_one_process",
    "DTYPES", "WORLD_MODEL_NAME", "GateConfig", "GateInputs", "attack_failures", "check_device", "check_dtype",
    "load_and_probe", "load_base_model", "load_checkpoint_model", "load_folder", "load_gate_inputs", "load_support_folder",
    "model_resolution", "resolve_model_source",
    "CACHE_DIR", "GATE_JSON", "REPORT_HTML", "check_output", "check_output_writable", "existing_report",
    "write_reports", "build_report", "checkpoint_entry", "summary_line", "thumbnail_rows", "verdict_json",
]


# The attacks a process group shards (gate/sharded.py); the others run in one process.
SHARDED_ATTACKS = ("memory", "adversarial-prompt", "utility")


def run_gate(config: GateConfig, echo: Callable[[str], None] = print,
             notice: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Gate every checkpoint of `config`; returns the report written to output/gate.json.

    `echo` receives one line per checkpoint; `notice` (default: `echo`) the lines saying how many
    checkpoints were resumed from an earlier run's cache and which reused a result of this run.
    Raises OutputError (exit code 2 on the command line) when the output cannot be written: before
    any compute when the folder is unwritable, and naming what stays cached when a later write fails.
    Under a process group of 2+ ranks (torchrun, accelerate launch, srun) the work is sharded.
    """
    notice = notice or echo
    attacks = config.attacks.attacks
    group = distributed_work.resolve(config.distributed, "distributed")
    if group is None:
        return run_gate_one_process(config, echo, notice)
    unsharded = [attack for attack in attacks if attack not in SHARDED_ATTACKS]
    if unsharded:
        raise InputError(f"--attacks {','.join(attacks)}: under torchrun/accelerate launch/srun the gate shards "
                         f"{', '.join(SHARDED_ATTACKS)} only; run {' and '.join(unsharded)} in one process")
    return run_gate_sharded(config, group, echo, notice)


def run_gate_one_process(config: GateConfig, echo: Callable[[str], None],
                         notice: Callable[[str], None]) -> dict[str, Any]:
    """`run_gate` in this process alone: every checkpoint in turn, each attack's part reused,
    resumed or computed (and cached at once), then the decisions and the report."""
    from ..attacks.judges import load_judge

    # 0. cheap checks before any model is loaded
    output = Path(config.output)
    check_output(output, config.resume, config.overwrite)
    inputs = load_gate_inputs(config, config.device)
    settings = config.attacks
    support = None
    if "multi-memory" in settings.attacks:
        support = load_support_folder(settings.support_images, settings.search.memories - 1, inputs.resolution,
                                      inputs.probe_config.resize)
    judged = {"concept-inversion", "adversarial-prompt"} & set(settings.attacks)
    judge = load_judge(settings.judge) if judged else None
    adversarial = None
    if "adversarial-prompt" in settings.attacks:
        adversarial = load_adversarial_inputs(settings, judge, inputs.resolution)
    fingerprint = model_fingerprint(inputs.source, config.model_config)
    cache = ResultCache(output / CACHE_DIR)
    check_output_writable(output, cache)  # before any compute, not after it
    keys = PartKeys.of_run(config, inputs, fingerprint, support, adversarial)
    utility = None
    if "utility" in settings.attacks:
        utility = BaseUtility(settings.utility, fingerprint, cache, config.resume)
    gate = _OneProcessGate(config, inputs, cache, keys, support, judge, adversarial, utility)

    records, decisions, resumed, reused = [], {}, 0, []
    bar = tqdm(config.checkpoints, desc="gate", unit="checkpoint", disable=not config.progress or len(config.checkpoints) < 2)
    for checkpoint in bar:
        entry, record, decision = gate.checkpoint(checkpoint)
        decisions[checkpoint.name] = decision
        records.append(record)
        resumed += record["from_cache"]
        if record["reused_from"] is not None:
            reused.append(f"{checkpoint.name} (same as {record['reused_from']})")
        for loaded in entry.get("loaded_weights") or []:
            echo(f"{checkpoint.name}: loaded {loaded['summary']}")
        echo(checkpoint_line(checkpoint.name, entry, decision.verdict, record["reused_from"]))
    return finish_gate(config, inputs, fingerprint, records, decisions, resumed, reused, cache, notice)


class _OneProcessGate:
    """One checkpoint at a time: what this run computed (for reuse) and how many it probed."""

    def __init__(self, config: GateConfig, inputs: GateInputs, cache: ResultCache, keys: PartKeys,
                 support: ImageSet | None, judge: Any, adversarial: AdversarialInputs | None = None,
                 utility: BaseUtility | None = None) -> None:
        self.config, self.inputs, self.cache, self.keys = config, inputs, cache, keys
        self.support, self.judge, self.adversarial, self.utility = support, judge, adversarial, utility
        self.sets = ResultCache(cache.folder / SETS_DIR)  # the reference sets' own probes
        self.this_run: dict[str, tuple[str, dict[str, Any]]] = {}  # cache key -> (checkpoint name, part) computed now
        self.probed = 0
        self._base: Any = None  # loaded on first need: adversarial targets, the base's utility

    def base_model(self) -> Any:
        """The base model (--model without any checkpoint's weights), loaded once."""
        if self._base is None:
            config = self.config
            self._base = load_base_model(self.inputs.source, config.device, config.dtype, config.model_config)
        return self._base

    def checkpoint(self, checkpoint: Checkpoint) -> tuple[dict[str, Any], dict[str, Any], Decision]:
        """(entry, record, decision) of one checkpoint: each part found or computed, then decided."""
        attacks = self.config.attacks.attacks
        # 1. the cache key of each attack's part
        hashes = weight_hashes(checkpoint.weights)
        keys = self.keys.of(hashes)
        # 2. each part: reused from this run, resumed from an earlier run's cache, or computed
        parts: dict[str, dict[str, Any]] = {}
        origin: dict[str, str] = {}
        for attack, key in keys.items():
            found = look_up(key, self.this_run, self.cache, self.config.resume)
            if found is not None:
                origin[attack], parts[attack] = found
        missing = [attack for attack in attacks if attack not in parts]
        if missing:
            parts.update(self._compute(checkpoint, missing, hashes))
            for attack in missing:
                self._store(checkpoint, keys[attack], parts[attack])
                origin[attack] = "computed"
            self.probed += 1
        from_cache, reused_from = origin_summary(origin, attacks)
        entry = assemble_entry(checkpoint, hashes, parts, attacks)
        # 3. decide
        record, decision = decided_record(entry, self.config, {"cache_key": keys[attacks[0]], "cache_keys": keys,
                                                               "origin": origin}, from_cache, reused_from)
        return entry, record, decision

    def _compute(self, checkpoint: Checkpoint, missing: list[str], hashes: dict[str, str]) -> dict[str, dict[str, Any]]:
        """The missing parts of one checkpoint, from one load of its model."""
        config, concept, reference = self.config, self.inputs.concept, self.inputs.reference
        probe_config, settings = self.inputs.probe_config, config.attacks
        parts: dict[str, dict[str, Any]] = {}
        started = time.perf_counter()
        model = load_checkpoint_model(self.inputs.source, checkpoint, config.device, config.dtype, config.model_config)
        adversarial_config = run_config(settings, probe_config.seed, config.thumbnails)
        if "adversarial-prompt" in missing:  # a prompt too long for the k tokens stops the gate before any compute
            check_prompts_fit(model, self.adversarial, adversarial_config)
        if "multi-memory" in missing:
            from ..attacks.memories import find_memories

            with attack_failures(checkpoint, "the multi-memory search of"):
                found = find_memories(model, concept, support=self.support, search=settings.search,
                                      reference=reference, config=probe_config.replace(keep_seeds=True))
            parts["multi-memory"] = multi_memory_part(found, concept, config.thumbnails)
            if "memory" in missing:  # the search's first memory is the probe: one computation for both
                parts["memory"] = checkpoint_entry(checkpoint, found.probe, concept, config.thumbnails, hashes,
                                                   found.seconds.get("probe", 0.0))
        if "memory" in missing and "memory" not in parts:
            # R's own probe, when a gate of another concept set against the same R cached it (--resume)
            set_key = self.keys.reference_set(hashes, placement(model))
            measured = self._reference_set(set_key)
            with attack_failures(checkpoint, "probing"):
                result = probe(model, concept, reference=reference, config=probe_config,
                               measured=None if measured is None else {"reference": measured})
            if measured is None:
                self._store_reference_set(checkpoint, set_key, result.reference)
            parts["memory"] = checkpoint_entry(checkpoint, result, concept, config.thumbnails, hashes,
                                               time.perf_counter() - started)
            parts["memory"]["reference_set"] = {"cache_key": set_key, "from_cache": measured is not None}
        if "concept-inversion" in missing:
            with attack_failures(checkpoint, "concept inversion on"):
                parts["concept-inversion"] = concept_inversion_part(
                    model, concept, settings, self.judge, probe_config.seed, config.thumbnails,
                    Path(config.output) / CONCEPT_INVERSION_DIR / checkpoint.name)
        if "adversarial-prompt" in missing:
            base = self.base_model() if self.adversarial.targets is None else None
            with attack_failures(checkpoint, "the adversarial-prompt attack on"):
                attacked = attack_slice(model, base, self.adversarial, adversarial_config, self.judge,
                                        range(len(self.adversarial.prompts)), config.thumbnails, config.progress)
            parts["adversarial-prompt"] = adversarial_part([attacked], self.adversarial, adversarial_config)
        if "utility" in missing:
            with attack_failures(checkpoint, "the utility check of"):
                parts["utility"] = self.utility.part(model, self.base_model)
        return parts

    def _store(self, checkpoint: Checkpoint, key: str, part: dict[str, Any], cache: ResultCache | None = None) -> None:
        """Cache one computed part at once (an interruption loses one checkpoint at most)."""
        try:
            (self.cache if cache is None else cache).put(key, part)  # (an empty cache is falsy)
        except OutputError as error:
            raise OutputError(f"--output: {error} (the result of {checkpoint.name}); "
                              f"{_cached_so_far(self.cache, self.probed)}") from None
        if cache is None:
            self.this_run[key] = (checkpoint.name, part)

    def _reference_set(self, key: str) -> SetProbe | None:
        """The reference set's probe an earlier gate cached under `key` (only with --resume), or None."""
        entry = self.sets.get(key) if self.config.resume else None
        return None if entry is None else SetProbe.from_dict(entry["set"])

    def _store_reference_set(self, checkpoint: Checkpoint, key: str, part: SetProbe) -> None:
        self._store(checkpoint, key, {"set": part.to_dict()}, self.sets)


def placement(model: Any) -> dict[str, Any]:
    """Where a loaded model computes: its device and each part's dtype (part of a set's cache key)."""
    parts = [("unet", model.unet), ("vae", model.vae), ("text_encoder", model.text_encoder)]
    if getattr(model, "text_encoder_2", None) is not None:  # SDXL
        parts.append(("text_encoder_2", model.text_encoder_2))
    return {"device": str(model.device), "dtypes": [str(module_device_dtype(module, name)[1]) for name, module in parts]}


def _cached_so_far(cache: ResultCache, probed: int) -> str:
    if probed == 0:
        return "no checkpoint had finished"
    return (f"the {probed} checkpoint result(s) probed before it stay cached in {str(cache.folder)!r}: "
            "rerun with --resume once the output can be written")
