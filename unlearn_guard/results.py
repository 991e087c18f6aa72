"""Named results of a probe: per image, per set (E or R), and the whole run, with `to_json()`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from .config import ProbeConfig
from .files import write_text_atomic
from .validation import json_number
from .signal.memory_score import MemoryScoreResult
from .stats.functional import MemoryDistanceResult


@dataclass(frozen=True)
class ImageProbe:
    """One image's outcome: the found seed's NLL under N(0, I) and the reconstruction PSNR (dB).

    `diverged` says where NaN/Inf first appeared ("inversion at t=141 (step 8/50)"), or None. A
    diverged inversion found no seed (NLL and PSNR are nan); a diverged reconstruction keeps its
    seed's NLL and has no PSNR. Either way the image found no memory that reconstructs it.
    """

    name: str
    prompt: str
    source: str
    sha256: str
    nll: float
    psnr: float
    diverged: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "prompt": self.prompt,
            "source": self.source,
            "sha256": self.sha256,
            "nll": json_number(self.nll),
            "psnr": json_number(self.psnr),
            "diverged": self.diverged,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ImageProbe":
        return cls(data["name"], data["prompt"], data["source"], data["sha256"], float(data["nll"]),
                   float(data["psnr"]), data.get("diverged"))


@dataclass
class SetProbe:
    """The outcome for one image set (the erased concept E, or the reference R).

    seeds (N, C, h, w) and reconstructions (N, 3, H, W) in [0, 1] are kept only when asked
    (a diverged image's rows hold NaN / zeros).
    """

    label: str
    images: list[ImageProbe]
    unet_evaluations: int
    seconds: float
    seeds: torch.Tensor | None = None
    reconstructions: torch.Tensor | None = None

    @property
    def nll(self) -> torch.Tensor:
        """(N,) float64 seed NLLs; nan where the inversion diverged."""
        return torch.tensor([image.nll for image in self.images], dtype=torch.float64)

    @property
    def psnr(self) -> torch.Tensor:
        """(N,) float64 PSNRs (dB); nan where the inversion or the reconstruction diverged."""
        return torch.tensor([image.psnr for image in self.images], dtype=torch.float64)

    @property
    def diverged(self) -> torch.Tensor:
        """(N,) bool: NaN/Inf appeared in the image's inversion or reconstruction."""
        return torch.tensor([image.diverged is not None for image in self.images], dtype=torch.bool)

    def summary(self) -> dict[str, Any]:
        nll, psnr = self.nll, self.psnr
        nll = nll[~torch.isnan(nll)]
        psnr = psnr[~torch.isnan(psnr)]
        finite = psnr[torch.isfinite(psnr)]
        return {
            "count": len(self.images),
            "diverged": int(self.diverged.sum()),
            "nll_mean": float(nll.mean()) if len(nll) else None,
            "nll_std": float(nll.std(unbiased=False)) if len(nll) else None,
            "psnr_mean": json_number(float(psnr.mean())) if len(psnr) else None,
            "psnr_min": json_number(float(psnr.min())) if len(psnr) else None,
            "psnr_mean_finite": float(finite.mean()) if len(finite) else None,
            "unet_evaluations": self.unet_evaluations,
            "seconds": self.seconds,
            "seconds_per_image": self.seconds / max(len(self.images), 1),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "summary": self.summary(), "images": [i.to_dict() for i in self.images]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SetProbe":
        """The set `to_dict` wrote (its per-image numbers exactly; seeds and reconstructions are not kept)."""
        summary = data["summary"]
        return cls(data["label"], [ImageProbe.from_dict(i) for i in data["images"]], int(summary["unet_evaluations"]),
                   float(summary["seconds"]))


@dataclass
class ProbeResult:
    """Everything `probe` found, with the config and provenance needed to reproduce it."""

    erased: SetProbe
    reference: SetProbe | None
    memory_distance: MemoryDistanceResult | None
    normal_nll: torch.Tensor
    config: ProbeConfig
    provenance: dict[str, Any] = field(default_factory=dict)
    memory: MemoryScoreResult | None = None
    notes: list[str] = field(default_factory=list)
    # The negative control (`unlearn_guard.controls`): its set and its memory score against E's anchors.
    control: SetProbe | None = None
    control_memory: MemoryScoreResult | None = None

    @property
    def d_n(self) -> float | None:
        """The memory relative distance d_N (None without a reference set)."""
        return None if self.memory_distance is None else self.memory_distance.value

    @property
    def memory_value(self) -> float | None:
        """The memory score M in [0, 1] (None without a reference set); see `unlearn_guard.signal`."""
        return None if self.memory is None else self.memory.value

    def to_dict(self) -> dict[str, Any]:
        return {
            "memory": None if self.memory is None else self.memory.to_dict(),
            "notes": list(self.notes),
            "memory_distance": None if self.memory_distance is None else self.memory_distance.to_dict(),
            "erased": self.erased.to_dict(),
            "reference": None if self.reference is None else self.reference.to_dict(),
            "control": None if self.control is None else self.control.to_dict(),
            "control_memory": None if self.control_memory is None else self.control_memory.to_dict(),
            "normal": {
                "count": int(self.normal_nll.numel()),
                "nll_mean": float(self.normal_nll.mean()),
                "nll_std": float(self.normal_nll.std(unbiased=False)),
            },
            "config": self.config.to_dict(),
            "provenance": self.provenance,
        }

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The result as JSON text; with `path`, also written atomically (temp file, then rename).

        A result that ranks probed together (`probe(..., distributed=True)`) is the same on every
        rank, and only rank 0 writes it; the others return the text.
        """
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None and self._writes_here():
            write_text_atomic(path, text)
        return text

    def _writes_here(self) -> bool:
        sharded = (self.provenance.get("distributed") or {}).get("sharded")
        if not sharded:
            return True
        from .distributed.process_group import rank

        return rank() == 0

    def summary_table(self) -> str:
        """A short human-readable table: one row per set, then d_N with its interval."""
        def shown(value: Any, digits: int) -> str:
            return "-" if value is None else f"{float(value):.{digits}f}"

        rows = [("set", "images", "diverged", "NLL mean", "NLL std", "PSNR mean (dB)", "s/image")]
        for part in (self.erased, self.reference, self.control):
            if part is None:
                continue
            s = part.summary()
            rows.append((part.label, str(s["count"]), str(s["diverged"]), shown(s["nll_mean"], 1), shown(s["nll_std"], 1),
                         shown(s["psnr_mean"], 2), f"{s['seconds_per_image']:.2f}"))
        rows.append(("N(0,I)", str(self.normal_nll.numel()), "-", f"{float(self.normal_nll.mean()):.1f}",
                     f"{float(self.normal_nll.std(unbiased=False)):.1f}", "-", "-"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
        memory = self.memory
        if memory is not None:
            level = int(round(memory.confidence * 100))
            interval = f" [{memory.ci_low:.3f}, {memory.ci_high:.3f}] ({level}%)" if memory.bootstrap_samples else ""
            lines.append(f"memory M = {memory.value:.3f}{interval}; {memory.n_reconstructed} of {memory.n_images} "
                         f"concept images regenerated within {memory.psnr_margin_db:g} dB of R's median PSNR "
                         f"({memory.psnr_reference_median:.2f} dB); 1 = remembers like known content, 0 = never saw it")
            if memory.n_atypical:
                lines.append(f"  {memory.n_atypical} concept seed(s) outside the typical set (|NLL - mu_N| > "
                             f"{memory.typical_sigmas:g} s_N) count as no memory")
        control = self.control_memory
        if control is not None:
            lines.append(f"control M = {control.value:.3f}" + (f" [{control.ci_low:.3f}, {control.ci_high:.3f}]"
                         if control.bootstrap_samples else "") + f"; {control.n_reconstructed} of {control.n_images} "
                         "control inversions regenerated (images no model can have learned: near 0 when the probe "
                         "is informative)")
        elif self.control is None and self.reference is not None:
            lines.append("control: off (control_images=0): nothing shows that this model does not invert everything")
        lines += [f"note: {note}" for note in self.notes]
        md = self.memory_distance
        if md is None:
            lines.append("d_N: not computed" + (" (no reference set)" if self.reference is None else ""))
        else:
            level = int(round(md.confidence * 100))
            interval = (f" [{md.ci_low:.3f}, {md.ci_high:.3f}] ({level}% bootstrap, {md.bootstrap_samples} resamples)"
                        if md.bootstrap_samples else "")
            lines.append(f"d_N ({md.kind}) = {md.value:.3f}{interval}; |E|={md.n_erased} |R|={md.n_reference} "
                         f"|N|={md.n_normal}")
        return "\n".join(lines)


def interval_record(result: MemoryScoreResult | MemoryDistanceResult | None) -> dict[str, float] | None:
    """{"value", "ci_low", "ci_high"} of a memory score or d_N, or None: the record every report writes.

    The floats are kept as they are (an interval without the bootstrap has nan ends); the writer's
    JSON settings decide how nan appears, as for every other number of the report."""
    if result is None:
        return None
    return {"value": result.value, "ci_low": result.ci_low, "ci_high": result.ci_high}
