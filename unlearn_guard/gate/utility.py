"""The gate's utility check (`--attacks utility`): did the erasure keep what the model should keep?

The base model's scores (`UtilityScores`: kept shapes' accuracy or CLIP score, per sampling setting)
do not depend on the checkpoint, so a run measures them once, on first need, and caches them in
OUTPUT/cache/ under a key of the base model's fingerprint and what fixes the scores
(`UtilityConfig.measured_with`); --resume takes them from there. Each checkpoint's part,
record["utility"], is its `UtilityResult.to_dict()` against them; the gate decides it under its own
threshold (decision.py), so a new --min-utility never measures again.
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import OutputError
from ..utility import UtilityConfig, UtilityScores, compare_utility, load_clip, measure_utility, utility_check
from .cache import ResultCache, cache_key


class BaseUtility:
    """The base model's scores under `config`, measured once per run (or taken from the cache with
    --resume), and the CLIP model (prompts only), loaded once for the base and every checkpoint."""

    def __init__(self, config: UtilityConfig, fingerprint: dict[str, Any], cache: ResultCache, resume: bool) -> None:
        self.config, self.cache, self.resume = config, cache, resume
        self.key = cache_key(fingerprint, {}, [], [], {}, extra={"part": "utility of the base model",
                                                                  "utility": config.measured_with()})
        self._scores: UtilityScores | None = None
        self._clip: tuple[Any, Any] | None = None

    @property
    def clip(self) -> tuple[Any, Any] | None:
        if self.config.prompts and self._clip is None:
            self._clip = load_clip(self.config.clip_model)
        return self._clip

    def scores(self, load_base: Callable[[], Any]) -> UtilityScores:
        """The base's scores: this run's, the cache's (--resume), or measured now on `load_base()`."""
        known = self.known()
        return known if known is not None else self.remember(measure_utility(load_base(), self.config, clip=self.clip))

    def known(self) -> UtilityScores | None:
        """The base's scores from this run or, with --resume, from the cache; None: they must be measured."""
        if self._scores is None and self.resume:
            cached = self.cache.get(self.key)
            if cached is not None:
                self._scores = UtilityScores.from_dict(cached)
        return self._scores

    def remember(self, scores: UtilityScores) -> UtilityScores:
        """Keep the base's scores for this run and cache them (a sharded gate measures them on its ranks)."""
        self._scores = scores
        try:
            self.cache.put(self.key, scores.to_dict())
        except OutputError as error:
            raise OutputError(f"--output: {error} (the base model's utility scores)") from None
        return scores

    def part(self, model: Any, load_base: Callable[[], Any]) -> dict[str, Any]:
        """record["utility"] of the checkpoint `model`: its `UtilityResult` against the base."""
        return utility_check(model, self.scores(load_base), self.config, clip=self.clip).to_dict()

    def part_from(self, checkpoint: UtilityScores, provenance: dict[str, Any]) -> dict[str, Any]:
        """record["utility"] from a checkpoint's scores measured elsewhere (a sharded gate's ranks), as
        `part` writes it; needs the base's scores (`known` or `remember` first)."""
        if self._scores is None:
            raise RuntimeError("the base model's utility scores are not known yet")
        result = compare_utility(checkpoint, self._scores, self.config)
        result.provenance = provenance
        return result.to_dict()
