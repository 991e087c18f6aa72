"""The report's plots as base64 PNGs, drawn with matplotlib (the optional `report` extra).

matplotlib is imported lazily and only its object API is used (`Figure` + the Agg canvas), so
the process-wide pyplot backend is never touched. Without matplotlib every function returns None
and the HTML report says how to get plots (`pip install unlearn_guard[report]`).
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any, Sequence

INSTALL_HINT = "pip install unlearn_guard[report]"
_COLOURS = {"E": "#d62728", "R": "#1f77b4", "N": "#7f7f7f"}


def _matplotlib() -> Any:
    """The matplotlib.figure module, or None when matplotlib is not installed."""
    try:
        import matplotlib.figure
    except ImportError:
        return None
    return matplotlib.figure


def available() -> bool:
    return _matplotlib() is not None


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if math.isfinite(float(v))]


def nll_histograms(erased: Sequence[float], reference: Sequence[float], normal: Sequence[float]) -> str | None:
    """Seed NLL of E (concept), R (reference) and N (N(0, I) draws) overlaid on shared bins."""
    mpl = _matplotlib()
    if mpl is None:
        return None
    sets = [("E: concept images", _finite(erased), "E"), ("R: reference images", _finite(reference), "R"),
            ("N: N(0, I) draws", _finite(normal), "N")]
    everything = [v for _, values, _ in sets for v in values]
    figure = mpl.Figure(figsize=(6.4, 3.2))
    axes = figure.subplots()
    if everything:
        low, high = min(everything), max(everything)
        width = (high - low) / 30 or 1.0
        bins = [low + i * width for i in range(31)]
        for label, values, key in sets:
            if values:
                axes.hist(values, bins=bins, alpha=0.45, label=f"{label} ({len(values)})", color=_COLOURS[key])
    axes.set_xlabel("seed NLL under N(0, I) (nats)")
    axes.set_ylabel("count")
    axes.set_title("Seed NLL: E vs R vs N")
    axes.legend(fontsize=8)
    return _png(figure)


def psnr_per_image(names: Sequence[str], psnr: Sequence[float], reference_names: Sequence[str] = (),
                   reference_psnr: Sequence[float] = ()) -> str | None:
    """Reconstruction PSNR per image (dB); identical reconstructions (+inf) are drawn at the top, marked."""
    mpl = _matplotlib()
    if mpl is None:
        return None
    labels = [f"E {n}" for n in names] + [f"R {n}" for n in reference_names]
    values = [float(v) for v in psnr] + [float(v) for v in reference_psnr]
    colours = [_COLOURS["E"]] * len(names) + [_COLOURS["R"]] * len(reference_names)
    finite = _finite(values)
    top = (max(finite) if finite else 50.0) + 5
    shown = [v if math.isfinite(v) else top for v in values]
    figure = mpl.Figure(figsize=(6.4, max(2.4, 0.22 * len(values) + 0.8)))
    axes = figure.subplots()
    axes.barh(range(len(values)), shown, color=colours)
    for i, value in enumerate(values):
        if not math.isfinite(value):
            axes.text(top, i, " inf", va="center", fontsize=7)
    axes.set_yticks(range(len(values)), labels, fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel("reconstruction PSNR (dB)")
    axes.set_title("PSNR per image (E red, R blue)")
    return _png(figure)


def signal_by_step(steps: Sequence[int], values: Sequence[float], low: Sequence[float], high: Sequence[float],
                   threshold: float, name: str, remembers: float, title: str) -> str | None:
    """A signal with its interval against training step, the gate's threshold and the
    "remembers" level as lines (memory score: 1; d_N: 1)."""
    mpl = _matplotlib()
    if mpl is None:
        return None
    figure = mpl.Figure(figsize=(6.4, 3.0))
    axes = figure.subplots()
    values = [float(v) for v in values]
    lower = [v - float(lo) if math.isfinite(float(lo)) else 0.0 for v, lo in zip(values, low)]
    upper = [float(hi) - v if math.isfinite(float(hi)) else 0.0 for v, hi in zip(values, high)]
    axes.errorbar(list(steps), values, yerr=[lower, upper], marker="o", capsize=3, label=f"{name} (interval)")
    axes.axhline(threshold, color=_COLOURS["E"], linestyle="--", label=f"threshold {threshold:g}")
    axes.axhline(remembers, color=_COLOURS["N"], linestyle=":", linewidth=1, label=f"{remembers:g} = remembers")
    tops = [v + u for v, u in zip(values, upper)] + [threshold, remembers]
    bottoms = [v - lo for v, lo in zip(values, lower)] + [threshold, remembers]
    span = max(tops) - min(bottoms) or 1.0
    axes.set_ylim(min(bottoms) - 0.08 * span, max(tops) + 0.08 * span)  # threshold and the reference line in view
    axes.set_xlabel("training step")
    axes.set_ylabel(name)
    axes.set_title(title)
    axes.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _png(figure)
