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
from ..utility import UtilityConfig, UtilityScores, load_clip, measure_utility, utility_check
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
        if self._scores is None:
            cached = self.cache.get(self.key) if self.resume else None
            if cached is not None:
                self._scores = UtilityScores.from_dict(cached)
            else:
                self._scores = measure_utility(load_base(), self.config, clip=self.clip)
                try:
                    self.cache.put(self.key, self._scores.to_dict())
                except OutputError as error:
                    raise OutputError(f"--output: {error} (the base model's utility scores)") from None
        return self._scores

    def part(self, model: Any, load_base: Callable[[], Any]) -> dict[str, Any]:
        """record["utility"] of the checkpoint `model`: its `UtilityResult` against the base."""
        return utility_check(model, self.scores(load_base), self.config, clip=self.clip).to_dict()
