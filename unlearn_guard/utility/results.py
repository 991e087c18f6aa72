"""Named results of the utility check, each with `to_dict()`.

  - `ItemScore`: one model's score on one kept shape or prompt under one setting (accuracy with
    its Wilson interval, or a mean CLIP score).
  - `UtilityScores`: one model's scores under every setting (what a gate caches for the base).
  - `SettingUtility`: checkpoint against base under one setting; `ratio` is the utility figure.
  - `UtilityResult`: every setting, the worst (lowest ratio), the threshold and the verdict.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..files import json_text
from ..sampling import SamplingSetting
from ..validation import json_number
from .config import UtilityConfig


@dataclass(frozen=True)
class ItemScore:
    """One model's score on `item` (a shape or a prompt): `value` is the share of `n` generations the
    classifier calls the shape (`successes`, Wilson [ci_low, ci_high]) or their mean CLIP score (0-100)."""

    item: str
    value: float
    n: int
    successes: int | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"item": self.item, "value": json_number(self.value), "n": self.n, "successes": self.successes,
                "ci_low": self.ci_low, "ci_high": self.ci_high}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ItemScore":
        return cls(str(data["item"]), float(data["value"]), int(data["n"]), data.get("successes"),
                   data.get("ci_low"), data.get("ci_high"))

    def shown(self) -> str:
        interval = "" if self.ci_low is None else f" [{self.ci_low:.2f}, {self.ci_high:.2f}]"
        return f"{self.value:.3f}{interval}"


def pooled(scores: list[ItemScore], confidence: float) -> ItemScore:
    """The mean over items: pooled accuracy with its Wilson interval, or the mean CLIP score."""
    from ..stats.proportion import wilson_interval

    total = sum(s.n for s in scores)
    if all(s.successes is not None for s in scores):
        successes = sum(s.successes for s in scores)
        low, high = wilson_interval(successes, total, confidence)
        return ItemScore("mean", successes / total, total, successes, low, high)
    return ItemScore("mean", sum(s.value * s.n for s in scores) / total, total)


@dataclass
class UtilityScores:
    """One model's scores: `scores[i][k]` under `settings[i]` for item k of `measured_with`'s config."""

    metric: str
    settings: tuple[SamplingSetting, ...]
    scores: list[list[ItemScore]]
    measured_with: dict[str, Any]
    source: str = ""
    seconds: float = 0.0

    @classmethod
    def measured(cls, config: UtilityConfig, rows: list[list[ItemScore]], source: str,
                 seconds: float) -> "UtilityScores":
        """One model's scores from its rows under every setting of `config`, in the config's order."""
        return cls(config.metric, config.settings, rows, config.measured_with(), source, seconds)

    def mean(self, index: int) -> ItemScore:
        return pooled(self.scores[index], float(self.measured_with["confidence"]))

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "source": self.source, "seconds": self.seconds,
                "measured_with": self.measured_with,
                "settings": [{"setting": s.to_dict(), "label": s.label, "items": [i.to_dict() for i in row],
                              "mean": self.mean(k).to_dict()} for k, (s, row) in enumerate(zip(self.settings,
                                                                                                self.scores))]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "UtilityScores":
        rows = data["settings"]
        return cls(str(data["metric"]), tuple(SamplingSetting.from_dict(r["setting"]) for r in rows),
                   [[ItemScore.from_dict(i) for i in r["items"]] for r in rows], dict(data["measured_with"]),
                   str(data.get("source", "")), float(data.get("seconds", 0.0)))


@dataclass
class SettingUtility:
    """Checkpoint against base under one sampling setting; `ratio` = checkpoint mean / base mean
    (None when the base scores 0: nothing to keep)."""

    setting: SamplingSetting
    checkpoint: list[ItemScore]
    base: list[ItemScore]
    checkpoint_mean: ItemScore
    base_mean: ItemScore

    @property
    def ratio(self) -> float | None:
        return None if self.base_mean.value <= 0 else self.checkpoint_mean.value / self.base_mean.value

    def to_dict(self) -> dict[str, Any]:
        return {"setting": self.setting.to_dict(), "label": self.setting.label, "ratio": self.ratio,
                "checkpoint_mean": self.checkpoint_mean.to_dict(), "base_mean": self.base_mean.to_dict(),
                "items": [{"item": c.item, "checkpoint": c.to_dict(), "base": b.to_dict(),
                           "ratio": None if b.value <= 0 else c.value / b.value}
                          for c, b in zip(self.checkpoint, self.base)]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SettingUtility":
        return cls(SamplingSetting.from_dict(data["setting"]),
                   [ItemScore.from_dict(item["checkpoint"]) for item in data["items"]],
                   [ItemScore.from_dict(item["base"]) for item in data["items"]],
                   ItemScore.from_dict(data["checkpoint_mean"]), ItemScore.from_dict(data["base_mean"]))


@dataclass
class UtilityResult:
    """The utility check: per setting, checkpoint and base per item and on the mean, and the ratio.

    `worst` is the setting with the lowest ratio (an undefined ratio counts as lowest); the check
    passes when that ratio is at least `config.min_ratio`."""

    config: UtilityConfig
    settings: list[SettingUtility]
    checkpoint_source: str = ""
    base_source: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def worst(self) -> SettingUtility:
        return min(self.settings, key=lambda s: -math.inf if s.ratio is None else s.ratio)

    @property
    def ratio(self) -> float | None:
        """The worst case's checkpoint / base: the utility figure the verdict reads."""
        return self.worst.ratio

    @property
    def passed(self) -> bool:
        return self.ratio is not None and self.ratio >= self.config.min_ratio

    @property
    def reason(self) -> str:
        return self.reason_for("min_ratio")

    def reason_for(self, bar: str) -> str:
        """The verdict in one line, naming the bar as the caller's user sets it (the gate: --min-utility)."""
        worst, what = self.worst, ("accuracy" if self.config.shapes else "CLIP score")
        if worst.ratio is None:
            return (f"utility undefined: the base model's mean {what} is 0 under {worst.setting.label}; "
                    "nothing to compare against")
        verdict, sign = ("utility kept", ">=") if self.passed else ("utility lost", "<")
        return (f"{verdict}: {what} ratio {worst.ratio:.3f} {sign} {self.config.min_ratio:g} ({bar}) under "
                f"{worst.setting.label}, the worst of {len(self.settings)} setting(s): checkpoint "
                f"{worst.checkpoint_mean.shown()} against base {worst.base_mean.shown()}")

    def to_dict(self) -> dict[str, Any]:
        worst = self.worst
        return {"kind": "unlearn_guard.utility", "config": self.config.to_dict(), "metric": self.config.metric,
                "checkpoint": self.checkpoint_source, "base": self.base_source,
                "settings": [s.to_dict() for s in self.settings],
                "worst": {"setting": worst.setting.to_dict(), "label": worst.setting.label, "ratio": worst.ratio},
                "ratio": self.ratio, "min_ratio": self.config.min_ratio, "passed": self.passed,
                "reason": self.reason, "seconds": dict(self.seconds), "provenance": dict(self.provenance)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "UtilityResult":
        """The result `to_dict` wrote (a gate's cache): `passed`, `ratio` and `reason` are recomputed."""
        return cls(UtilityConfig.from_dict(data["config"]), [SettingUtility.from_dict(s) for s in data["settings"]],
                   str(data.get("checkpoint", "")), str(data.get("base", "")), dict(data.get("seconds") or {}),
                   dict(data.get("provenance") or {}))

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The result as JSON text; with `path`, written atomically."""
        return json_text(self.to_dict(), path)

    def summary_table(self) -> str:
        """One row per setting: every item's checkpoint / base score, the means and the ratio; then the verdict."""
        def ratio(value: float | None) -> str:
            return "-" if value is None else f"{value:.3f}"

        header = ["setting", *self.config.items, "mean", "base mean", "ratio"]
        rows = [header]
        for s in self.settings:
            rows.append([s.setting.label, *(f"{c.value:.2f}/{b.value:.2f}" for c, b in zip(s.checkpoint, s.base)),
                         f"{s.checkpoint_mean.value:.3f}", f"{s.base_mean.value:.3f}", ratio(s.ratio)])
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
                 for row in rows]
        return "\n".join([*lines, self.reason])
