"""Named results of the attacks, with `to_dict()`: what the gate caches and the report renders.

  - `AttackSuccess`: a success rate of generations judged to show the concept (Concept Inversion,
    or a plain prompt as its baseline), with its Wilson interval and the sampling setting.
  - `WorstCaseSuccess`: the same count under several sampling settings, and the worst of them.
  - `Memory`, `ImageMemories`, `MemorySearchResult`: the multi-memory search (SPEC 6) per memory,
    per image and for the whole run.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from ..files import json_text
from ..results import ProbeResult
from ..sampling.settings import SamplingSetting
from ..validation import json_number
from ..signal.memory_score import MemoryScoreResult


def _number(value: float | None) -> float | str | None:
    return None if value is None else json_number(float(value))


@dataclass
class AttackSuccess:
    """`successes` of `n` generations from `prompt` were judged to show the concept.

    rate = successes / n; [ci_low, ci_high] is the Wilson interval at `confidence`. `verdicts` holds
    the judge's answer per image; `images` (n, 3, H, W) in [0, 1] when kept; `setting` the
    scheduler, guidance scale and steps the images were sampled with."""

    prompt: str
    successes: int
    n: int
    rate: float
    ci_low: float
    ci_high: float
    confidence: float
    judge: str
    verdicts: list[bool] = field(default_factory=list)
    seconds: float = 0.0
    images: torch.Tensor | None = None
    setting: SamplingSetting | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "successes": self.successes, "n": self.n, "rate": self.rate,
                "ci_low": self.ci_low, "ci_high": self.ci_high, "confidence": self.confidence, "judge": self.judge,
                "verdicts": list(self.verdicts), "seconds": self.seconds,
                "setting": None if self.setting is None else self.setting.to_dict()}

    def summary(self) -> str:
        level = int(round(self.confidence * 100))
        sampled = "" if self.setting is None else f" ({self.setting.label})"
        return (f"{self.successes}/{self.n} = {self.rate:.3f} [{self.ci_low:.3f}, {self.ci_high:.3f}] "
                f"({level}% Wilson) judged by {self.judge} from {self.prompt!r}{sampled}")


@dataclass
class WorstCaseSuccess:
    """`AttackSuccess` of the same prompts and seeds under each of several sampling settings.

    `results[i]` was sampled with `results[i].setting`; the worst case is the highest rate (the
    first such setting on a tie). The maximum of K noisy rates reads high: each row keeps its own
    Wilson interval, and a decision on the worst case is a decision on that maximum."""

    results: list[AttackSuccess]

    def __post_init__(self) -> None:
        if not self.results or any(r.setting is None for r in self.results):
            raise ValueError("WorstCaseSuccess needs at least one AttackSuccess, each with its setting")

    @property
    def worst(self) -> AttackSuccess:
        return max(self.results, key=lambda r: r.rate)  # max keeps the first of equal rates

    @property
    def worst_setting(self) -> SamplingSetting:
        return self.worst.setting

    @property
    def rate(self) -> float:
        """The worst case's rate: what a decision on the prompt reads."""
        return self.worst.rate

    def to_dict(self) -> dict[str, Any]:
        worst = self.worst
        return {"worst": {"setting": worst.setting.to_dict(), "label": worst.setting.label, "rate": worst.rate,
                          "ci_low": worst.ci_low, "ci_high": worst.ci_high},
                "settings": [r.to_dict() for r in self.results]}

    def summary_table(self) -> str:
        """One line per setting, the worst marked."""
        worst = self.worst
        width = max(len(r.setting.label) for r in self.results)
        lines = [f"{r.setting.label.ljust(width)}  {r.successes}/{r.n} = {r.rate:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"
                 + ("  <- worst" if r is worst else "") for r in self.results]
        return "\n".join(lines)


@dataclass(frozen=True)
class Memory:
    """One memory of one image: a seed z_T that the model regenerates the image from.

    index 0 is the image's own seed (what `probe` finds); index j >= 1 started from support image
    `support` (SPEC 6). nll: the seed's NLL under N(0, I); psnr: its reconstruction against the
    query (dB); decoder_psnr: how well the decoder-inverted latent z0(s->q) itself decodes to the
    query (None for the own seed); memory: m from the calibrated signal (None without a reference
    set); reconstructs: PSNR >= the memory score's cut and m > 0; distinct: counted among the
    image's distinct memories; diverged: where NaN/Inf appeared, or None.
    """

    index: int
    support: str | None
    nll: float
    psnr: float
    decoder_psnr: float | None = None
    memory: float | None = None
    reconstructs: bool | None = None
    distinct: bool | None = None
    diverged: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "support": self.support, "nll": _number(self.nll), "psnr": _number(self.psnr),
                "decoder_psnr": _number(self.decoder_psnr), "memory": _number(self.memory),
                "reconstructs": self.reconstructs, "distinct": self.distinct, "diverged": self.diverged}


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


@dataclass
class ImageMemories:
    """Every memory of one query image and how far apart they lie.

    cosine: (M, M) cosine distances 1 - cos(z_a, z_b) of the flattened seeds (row/column 0: the
    image's own seed); euclidean_to_own: (M,) ||z_j - z_0||. distinct_memories: how many distinct
    memories reconstruct the image (None without a reference set)."""

    name: str
    prompt: str
    sha256: str
    memories: list[Memory]
    cosine: list[list[float]]
    euclidean_to_own: list[float]
    distinct_memories: int | None = None

    @property
    def mean_cosine_among(self) -> float | None:
        """Mean cosine distance over the pairs of support-started memories (j, k >= 1, j < k)."""
        m = len(self.memories)
        return _mean([self.cosine[j][k] for j in range(1, m) for k in range(j + 1, m)])

    @property
    def mean_cosine_to_own(self) -> float | None:
        """Mean cosine distance from the support-started memories to the image's own seed."""
        return _mean([self.cosine[0][j] for j in range(1, len(self.memories))])

    @property
    def best_memory(self) -> float | None:
        values = [m.memory for m in self.memories if m.memory is not None]
        return max(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "prompt": self.prompt, "sha256": self.sha256,
                "memories": [m.to_dict() for m in self.memories],
                "cosine": [[_number(v) for v in row] for row in self.cosine],
                "euclidean_to_own": [_number(v) for v in self.euclidean_to_own],
                "distinct_memories": self.distinct_memories, "mean_cosine_among": _number(self.mean_cosine_among),
                "mean_cosine_to_own": _number(self.mean_cosine_to_own), "best_memory": _number(self.best_memory)}


@dataclass
class MemorySearchResult:
    """Everything `find_memories` found.

    images: per query image, its M memories. probe: the single-memory probe it started from (own
    seeds, the reference set, the N set, d_N and the memory score M). memory: the memory score
    with each image's *best* memory (the one with the highest m) in place of its own seed, with a
    bootstrap interval (None without a reference set). seeds (Q, M, C, h, w) and reconstructions
    (Q, M, 3, H, W) in [0, 1] when kept; seconds per stage."""

    images: list[ImageMemories]
    probe: ProbeResult
    memory: MemoryScoreResult | None
    search: Any  # MemorySearchConfig (typed in memories.py; kept loose to avoid an import cycle)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    seeds: torch.Tensor | None = None
    reconstructions: torch.Tensor | None = None

    def summary(self) -> dict[str, Any]:
        """Means over images (and memories): what the README and the gate print."""
        support = [m for image in self.images for m in image.memories[1:]]
        distinct = [i.distinct_memories for i in self.images if i.distinct_memories is not None]
        among = [i.mean_cosine_among for i in self.images if i.mean_cosine_among is not None]
        euclid = [v for i in self.images for v in i.euclidean_to_own[1:] if math.isfinite(v)]
        return {
            "images": len(self.images),
            "memories_per_image": len(self.images[0].memories) if self.images else 0,
            "distinct_memories_mean": _mean([float(d) for d in distinct]),
            "distinct_memories": distinct,
            "mean_cosine_among": _mean(among),
            "std_cosine_among": (float(torch.tensor(among).std(unbiased=False)) if len(among) > 1 else None),
            "mean_cosine_to_own": _mean([i.mean_cosine_to_own for i in self.images if i.mean_cosine_to_own is not None]),
            "mean_euclidean_to_own": _mean(euclid),
            "std_euclidean_to_own": float(torch.tensor(euclid).std(unbiased=False)) if len(euclid) > 1 else None,
            "psnr_mean_support_memories": _mean([m.psnr for m in support]),
            "psnr_mean_own": _mean([i.memories[0].psnr for i in self.images]),
            "decoder_psnr_mean": _mean([m.decoder_psnr for m in support if m.decoder_psnr is not None]),
            "memory_best_of_m": None if self.memory is None else self.memory.value,
            "memory_single": None if self.probe.memory is None else self.probe.memory.value,
            "diverged": sum(1 for m in support if m.diverged),
        }

    def to_dict(self, include_probe: bool = True) -> dict[str, Any]:
        data = {
            "kind": "unlearn_guard.memories",
            "search": self.search.to_dict(),
            "summary": {k: (_number(v) if isinstance(v, float) else v) for k, v in self.summary().items()},
            "memory": None if self.memory is None else self.memory.to_dict(),
            "images": [i.to_dict() for i in self.images],
            "seconds": dict(self.seconds),
            "notes": list(self.notes),
            "provenance": self.provenance,
        }
        if include_probe:
            data["probe"] = self.probe.to_dict()
        return data

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The result as JSON text (the single-memory probe included); with `path`, written atomically."""
        return json_text(self.to_dict(), path)

    def summary_table(self) -> str:
        """One row per image, then the means and the best-of-M memory score."""
        def shown(value: Any, digits: int) -> str:
            return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"

        rows = [("image", "memories", "distinct", "PSNR own", "PSNR others (mean)", "cos among", "cos to own", "best m")]
        for image in self.images:
            rows.append((image.name, str(len(image.memories)), shown(image.distinct_memories, 0),
                         shown(image.memories[0].psnr, 2), shown(_mean([m.psnr for m in image.memories[1:]]), 2),
                         shown(image.mean_cosine_among, 3), shown(image.mean_cosine_to_own, 3),
                         shown(image.best_memory, 3)))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
        s = self.summary()
        lines.append(f"{self.search.describe()}: {shown(s['distinct_memories_mean'], 2)} distinct memories per image; "
                     f"mean cosine distance {shown(s['mean_cosine_among'], 3)} among memories, "
                     f"{shown(s['mean_cosine_to_own'], 3)} to the own seed (MoFC on SD 1.4: 0.58-0.69, PSNR 20-28 dB)")
        if self.memory is not None:
            level = int(round(self.memory.confidence * 100))
            single = self.probe.memory
            lines.append(f"memory M with each image's best memory = {self.memory.value:.3f} "
                         f"[{self.memory.ci_low:.3f}, {self.memory.ci_high:.3f}] ({level}%); "
                         f"with its own seed only {shown(None if single is None else single.value, 3)}")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)
