"""The gate's words and pictures for people and scripts: one line per checkpoint, the `--json`
verdict, and the thumbnails of concept images beside their reconstructions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import ImageSet
from ..results import ProbeResult
from .decision import VERDICT_EXIT_CODES, format_interval, rate_text
from .output import GATE_JSON, REPORT_HTML


def thumbnail_rows(images: ImageSet, result: ProbeResult, count: int) -> list[dict[str, str]]:
    """The first `count` concept images beside their reconstructions, as small base64 PNGs."""
    from ..report.images import png_base64

    reconstructions = result.erased.reconstructions
    if reconstructions is None or count == 0:
        return []
    rows = []
    for i in range(min(count, len(images))):
        rows.append({
            "name": images.names[i],
            "prompt": images.prompts[i],
            "image": png_base64((images.pixels[i] + 1) / 2),
            "reconstruction": png_base64(reconstructions[i]),
        })
    return rows


def _interval(value: Any, low: Any, high: Any) -> str:
    return "not computed" if value is None else format_interval(float(value), float(low), float(high))


def summary_line(entry: dict[str, Any]) -> str:
    """memory M [interval], d_N [interval] (kind), mean PSNR, and each further attack's number: one
    checkpoint's numbers on one line."""
    attacks = entry.get("attacks") or ["memory"]
    parts = []
    if "memory" in attacks:
        memory = entry.get("memory") or {}
        psnr_mean = entry.get("psnr_mean")
        diverged = f", {entry['diverged']} diverged" if entry.get("diverged") else ""
        control = entry.get("control_memory")
        shown_control = "off" if control is None else _interval(control.get("value"), control.get("ci_low"),
                                                                  control.get("ci_high"))
        parts.append(f"memory M = {_interval(memory.get('value'), memory.get('ci_low'), memory.get('ci_high'))}, "
                     f"control M = {shown_control}, "
                     f"d_N = {_interval(entry.get('d_n'), entry.get('ci_low'), entry.get('ci_high'))} "
                     f"({entry.get('distance_kind')}), "
                     f"mean PSNR {'-' if psnr_mean is None else f'{float(psnr_mean):.2f} dB'}{diverged}")
    if "multi-memory" in attacks:
        part = entry.get("multi_memory") or {}
        best = part.get("memory") or {}
        summary = part.get("summary") or {}
        distinct = summary.get("distinct_memories_mean")
        cosine = summary.get("mean_cosine_among")
        parts.append(f"best-of-{summary.get('memories_per_image', '?')} memory M = "
                     f"{_interval(best.get('value'), best.get('ci_low'), best.get('ci_high'))}, "
                     f"{'-' if distinct is None else f'{float(distinct):.2f}'} distinct memories per image, "
                     f"cosine {'-' if cosine is None else f'{float(cosine):.3f}'}")
    if "concept-inversion" in attacks:
        part = entry.get("concept_inversion") or {}
        attack = part.get("attack") or {}
        baseline = part.get("baseline") or {}
        parts.append(f"concept inversion success = {_interval(attack.get('rate'), attack.get('ci_low'), attack.get('ci_high'))}"
                     + (f" (plain prompt {float(baseline['rate']):.3f})" if baseline else ""))
    if "adversarial-prompt" in attacks:
        part = entry.get("adversarial_prompt") or {}
        pre, asr = part.get("pre_asr"), part.get("asr")
        parts.append("adversarial prompts: not computed" if not (pre and asr) else
                     f"adversarial prompts: Pre-ASR {rate_text(pre)}, ASR {rate_text(asr)}")
    if "utility" in attacks:
        part = entry.get("utility") or {}
        worst = part.get("worst") or {}
        ratio = worst.get("ratio")
        parts.append("utility: not measured" if not part else
                     f"utility ratio {'undefined' if ratio is None else f'{float(ratio):.3f}'} "
                     f"(worst of {len(part.get('settings') or [])}: {worst.get('label')})")
    return "; ".join(parts)


def checkpoint_line(name: str, entry: dict[str, Any], verdict: str, reused_from: str | None) -> str:
    """The line the gate prints for one checkpoint: its numbers, its verdict, and whose result it reused."""
    return (f"{name}: {summary_line(entry)} -> {verdict.upper()}"
            + (f" (reused the result of {reused_from}: identical weights)" if reused_from else ""))


def _attack_verdicts(record: dict[str, Any]) -> dict[str, Any]:
    """The further attacks' numbers for --json (no per-image data, no thumbnails)."""
    found: dict[str, Any] = {}
    if record.get("attacks"):
        found["attacks"] = record["attacks"]
    if record.get("multi_memory"):
        part = record["multi_memory"]
        summary = part.get("summary") or {}
        found["multi_memory"] = {"memory": part.get("memory") and {k: part["memory"][k] for k in ("value", "ci_low", "ci_high")},
                                 **{k: summary.get(k) for k in ("memories_per_image", "distinct_memories_mean",
                                                                "mean_cosine_among", "mean_cosine_to_own")}}
    if record.get("concept_inversion"):
        part = record["concept_inversion"]
        attack, baseline = part.get("attack") or {}, part.get("baseline") or {}
        found["concept_inversion"] = {**{k: attack.get(k) for k in ("rate", "ci_low", "ci_high", "successes", "n")},
                                      "baseline_rate": baseline.get("rate"), "saved_to": part.get("saved_to")}
    if record.get("adversarial_prompt"):
        part = record["adversarial_prompt"]
        rates = {name: {k: (part.get(name) or {}).get(k) for k in ("rate", "ci_low", "ci_high", "successes", "n")}
                 for name in ("pre_asr", "asr")}
        judge = part.get("judge") or {}
        found["adversarial_prompt"] = {**rates, "attacked": part.get("attacked"),
                                       "judge": {k: judge.get(k) for k in ("spec", "name", "version", "threshold")},
                                       "preset": (part.get("config") or {}).get("preset")}
    if record.get("utility"):
        part = record["utility"]
        worst = part.get("worst") or {}
        means = next((s for s in part.get("settings") or [] if s.get("label") == worst.get("label")), {})
        found["utility"] = {"metric": part.get("metric"), "ratio": worst.get("ratio"), "worst_setting": worst.get("label"),
                            "checkpoint_mean": (means.get("checkpoint_mean") or {}).get("value"),
                            "base_mean": (means.get("base_mean") or {}).get("value")}
    return found


def report_verdict(report: dict[str, Any]) -> str:
    """"pass", "fail" or "inconclusive" of a gate report (one written before inconclusive existed: from "passed")."""
    return report.get("verdict") or ("pass" if report.get("passed") else "fail")


def report_exit_code(report: dict[str, Any]) -> int:
    """The command line's exit code for a gate report: 0 pass, 1 fail, 4 inconclusive."""
    return VERDICT_EXIT_CODES[report_verdict(report)]


def verdict_json(report: dict[str, Any], output: Path | None = None) -> dict[str, Any]:
    """The machine-readable verdict `--json` prints: no per-image data, no thumbnails."""
    keys = ("name", "step", "memory", "control_memory", "d_n", "ci_low", "ci_high", "confidence", "distance_kind", "psnr_mean", "diverged",
            "verdict", "passed", "reasons", "from_cache", "reused_from")
    verdict = {
        "verdict": report["verdict"],
        "passed": report["passed"],
        "exit_code": report_exit_code(report),
        "reasons": report["reasons"],
        "thresholds": report["thresholds"],
        "preset": report["config"]["preset"],
        "checkpoints": [{**{k: record.get(k) for k in keys}, **_attack_verdicts(record)} for record in report["checkpoints"]],
    }
    if output is not None:
        verdict["report"] = {"json": str(output / GATE_JSON), "html": str(output / REPORT_HTML)}
    return verdict
