"""The gate's plan: the cache key of each attack's part of a checkpoint, and where each part comes
from — reused from this run (identical weights), resumed from an earlier run's cache (--resume), or
computed. Both gates plan alike, so a sharded run reuses and resumes what a one-process run would."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ..io import ImageSet
from .adversarial import AdversarialInputs
from .attacks import AttackSettings
from .cache import ResultCache, cache_key
from .inputs import GateConfig, GateInputs


@dataclass(frozen=True)
class PartKeys:
    """What every cache key of a run shares: the base model's fingerprint, both image sets' (sha256,
    prompt) pairs, the probe config, the thumbnail count, and the attacks' settings and inputs (support
    images; the adversarial prompts, targets and judge, `AdversarialInputs.key`)."""

    fingerprint: dict[str, Any]
    concept: list[tuple[str, str]]
    reference: list[tuple[str, str]]
    config: dict[str, Any]
    thumbnails: dict[str, int]
    settings: AttackSettings
    support: list[str]
    adversarial: dict[str, Any] | None = None

    @classmethod
    def of_run(cls, config: GateConfig, inputs: GateInputs, fingerprint: dict[str, Any],
               support: ImageSet | None = None, adversarial: AdversarialInputs | None = None) -> PartKeys:
        """The keys' shared half for `config`, whose images and probe config `inputs` holds."""
        support_hashes = [] if support is None else support.sha256[: config.attacks.search.memories - 1]
        return cls(fingerprint, list(zip(inputs.concept.sha256, inputs.concept.prompts)),
                   list(zip(inputs.reference.sha256, inputs.reference.prompts)), inputs.probe_config.to_dict(),
                   {"thumbnails": min(config.thumbnails, len(inputs.concept))}, config.attacks, support_hashes,
                   None if adversarial is None else adversarial.key(config.thumbnails))

    def reference_set(self, hashes: dict[str, str], placement: dict[str, Any]) -> str:
        """The cache key of the reference set's own probe on a checkpoint with these weight hashes: the
        base model, the weights, R's (sha256, prompt) pairs, the probe config and where the model ran
        (`placement`: device and each part's dtype), and no concept image. Gates of other concept sets
        against the same R find it (with --resume) and invert only their own sets (`probe(..., measured=...)`)."""
        return cache_key(self.fingerprint, hashes, [], self.reference, self.config,
                         extra={"part": "reference-set", **placement})

    def of(self, hashes: dict[str, str]) -> dict[str, str]:
        """{attack: cache key} for a checkpoint with these weight hashes: the memory key, and for each
        further attack the same inputs plus the attack's settings and inputs."""
        return {attack: cache_key(self.fingerprint, hashes, self.concept, self.reference, self.config,
                                  extra=self._extra(attack))
                for attack in self.settings.attacks}

    def _extra(self, attack: str) -> dict[str, Any]:
        if attack == "memory":
            return self.thumbnails
        if attack == "adversarial-prompt":
            return {**self.thumbnails, **self.settings.key_for(attack), "inputs": self.adversarial}
        if attack == "utility":  # no thumbnails, no support images: the scores depend on the utility config
            return self.settings.key_for(attack)
        return {**self.thumbnails, **self.settings.key_for(attack), "support": self.support}


def look_up(key: str, this_run: dict[str, tuple[str, Any]], cache: ResultCache, resume: bool) -> tuple[str, Any] | None:
    """Where the part under `key` already is: ("reused:<checkpoint>", what this run stored) for a key
    this run computed, ("cache", the entry) for one an earlier run cached (only with --resume, each
    time it appears); None when it has to be computed."""
    if key in this_run:
        name, stored = this_run[key]
        return f"reused:{name}", stored
    if resume and (cached := cache.get(key)) is not None:
        return "cache", cached
    return None


def origin_summary(origin: dict[str, str], attacks: Sequence[str]) -> tuple[bool, str | None]:
    """(from_cache, reused_from) of a checkpoint: every part resumed from the cache; the one
    checkpoint of this run whose result every part reused (None when not all parts were reused)."""
    from_cache = all(origin[a] == "cache" for a in attacks)
    reused_names = {origin[a].removeprefix("reused:") for a in attacks if origin[a].startswith("reused:")}
    every_part_reused = all(origin[a].startswith("reused:") for a in attacks)
    reused_from = reused_names.pop() if len(reused_names) == 1 and every_part_reused else None
    return from_cache, reused_from


def part_plan(config: GateConfig, keys: PartKeys, cache: ResultCache, attack: str,
              hashes: list[dict[str, str]]) -> tuple[list[dict[str, Any]], dict[int, Any]]:
    """The sharded gate's plan of one attack, one item per checkpoint in order: its `key` and weight
    `hashes` (one dict per checkpoint, `weight_hashes`), and its `action` — "compute", "reuse" (the
    result of checkpoint `source`, named in `reused_from`) or "cached". Returns the plan and
    {checkpoint index: cached part}."""
    plan, computed_as, entries = [], {}, {}
    for index, checkpoint in enumerate(config.checkpoints):
        key = keys.of(hashes[index])[attack]
        item = {"index": index, "key": key, "hashes": hashes[index], "action": "compute", "source": index,
                "reused_from": None}
        found = look_up(key, computed_as, cache, config.resume)
        if found is None:
            computed_as[key] = (checkpoint.name, index)
        elif found[0] == "cache":
            item["action"] = "cached"
            entries[index] = found[1]
        else:
            item.update(action="reuse", source=found[1], reused_from=found[0].removeprefix("reused:"))
        plan.append(item)
    return plan, entries


def item_origin(item: dict[str, Any]) -> str:
    """A plan item's origin as the one-process gate writes it: "computed", "cache" or "reused:<checkpoint>"."""
    return {"compute": "computed", "cached": "cache"}.get(item["action"], f"reused:{item['reused_from']}")
