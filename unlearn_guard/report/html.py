"""A single self-contained HTML report: every image is a data URI, so the file opens offline.

Top to bottom: the verdict and its reasons; one row per checkpoint (d_N, interval, distance
kind, mean PSNR, and each further attack's number, verdict); d_N, the memory score and the attack
success rate against training step with their threshold lines (two or more checkpoints with
steps); per checkpoint the NLL histograms of E, R and N, PSNR per image, the query images beside
their reconstructions from the found seeds, and the per-image table; the multi-memory search
(each image's memories' reconstructions side by side, and their cosine-distance matrix), the
Concept Inversion attack (generations with the learned token and the judge's verdicts), the
adversarial prompts (Pre-ASR and ASR, each prompt's outcome and adversarial prompt, the judged
images with the judge's verdicts) and the utility check (checkpoint against base per sampling
setting and kept item) when they ran; then inputs (image and weight hashes), config and provenance. All text is escaped. A small inline
script marks, after load, whether every image decoded (`#image-check`), which the headless
browser test reads.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from . import plots
from .attack_sections import (adversarial_prompt_section, concept_inversion_section, multi_memory_section,
                              utility_section)
from .markup import escape_text, format_number, image_tag, rate_interval

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1100px;padding:1rem 1.5rem;color:#222}
h1{font-size:1.4rem;margin:.2rem 0}h2{font-size:1.15rem;margin-top:1.6rem;border-bottom:1px solid #ddd}
.verdict{padding:1rem 1.2rem;border-radius:8px;color:#fff;margin:.8rem 0}
.verdict.pass{background:#1a7f37}.verdict.fail{background:#cf222e}.verdict.none{background:#57606a}
.verdict .big{font-size:1.6rem;font-weight:700}.verdict ul{margin:.4rem 0 0 1.1rem;padding:0}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:right;white-space:nowrap}
th{background:#f6f8fa}td.l,th.l{text-align:left}td.w{white-space:normal;word-break:break-all}.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}
.plot{max-width:100%;height:auto;display:block;margin:.4rem 0}
.grid{display:flex;flex-wrap:wrap;gap:.6rem}.pair{border:1px solid #ddd;border-radius:6px;padding:.3rem;font-size:.7rem;text-align:center;width:210px}
.pair img{width:96px;height:96px;image-rendering:pixelated;margin:1px}
.memrow{display:flex;flex-wrap:wrap;gap:.4rem;align-items:flex-start;margin:.4rem 0}.mem{font-size:.7rem;text-align:center;width:100px}
.mem img{width:96px;height:96px;image-rendering:pixelated;border:2px solid #ddd}.mem.distinct img{border-color:#1a7f37}
.gen{font-size:.7rem;text-align:center;width:70px}.gen img{width:64px;height:64px;image-rendering:pixelated;border:2px solid #ddd}
.gen.yes img{border-color:#cf222e}table.cos td{font-size:.75rem;padding:.15rem .35rem}
details{margin:.6rem 0}summary{cursor:pointer;font-weight:600}
pre{background:#f6f8fa;padding:.6rem;overflow:auto;font-size:.75rem;max-height:24rem}.note{color:#57606a;font-size:.85rem}
code{font-size:.8rem}.scroll{overflow-x:auto}
"""

_IMAGE_CHECK = """
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var mark = document.getElementById('image-check');
  mark.setAttribute('data-images', String(images.length));
  mark.setAttribute('data-broken', String(broken.length));
  mark.textContent = broken.length === 0 ? 'images-ok ' + images.length : 'images-broken ' + broken.length;
});
"""


def _verdict_block(report: dict[str, Any]) -> str:
    verdict = report.get("verdict")
    if verdict is None:
        css, title = "none", "NO VERDICT (probe only, no thresholds)"
    elif report.get("passed"):
        css, title = "pass", "PASS &mdash; forgotten enough"
    elif verdict == "inconclusive":
        css, title = "none", "INCONCLUSIVE &mdash; the probe cannot read memory in this model"
    else:
        from ..gate.decision import failure_label

        css, title = "fail", f"FAIL &mdash; {escape_text(failure_label(report.get('failed') or []))}"
    reasons = "".join(f"<li>{escape_text(r)}</li>" for r in report.get("reasons") or [])
    thresholds = report.get("thresholds") or {}
    parts = []
    if thresholds.get("max_memory") is not None:
        parts.append(f"max memory {format_number(thresholds['max_memory'], 3)} (upper end of the interval)")
    if thresholds.get("min_d_n") is not None:
        parts.append(f"min d_N {format_number(thresholds['min_d_n'], 3)}")
    if thresholds.get("max_psnr") is not None:
        parts.append(f"max mean PSNR {format_number(thresholds['max_psnr'], 2)} dB")
    if thresholds.get("max_multi_memory") is not None:
        parts.append(f"max best-of-M memory {format_number(thresholds['max_multi_memory'], 3)} (multi-memory, upper end)")
    if thresholds.get("max_attack_success") is not None:
        parts.append(f"max attack success {format_number(thresholds['max_attack_success'], 3)} (concept inversion, Wilson "
                     "upper end)")
    if thresholds.get("max_asr") is not None:
        parts.append(f"max ASR {format_number(thresholds['max_asr'], 3)} (adversarial prompts, Wilson upper end)")
    if thresholds.get("min_utility") is not None:
        parts.append(f"min utility {format_number(thresholds['min_utility'], 3)} (worst-case ratio to the base model)")
    line = f"<div>Thresholds: {escape_text(', '.join(parts))}</div>" if parts else ""
    return (f'<div class="verdict {css}" id="verdict" data-verdict="{escape_text(verdict or "none")}">'
            f'<div class="big">{title}</div>{line}<ul>{reasons}</ul></div>')


def _attack_columns(records: list[dict[str, Any]]) -> tuple[bool, bool, bool, bool]:
    return (any(r.get("multi_memory") for r in records), any(r.get("concept_inversion") for r in records),
            any(r.get("adversarial_prompt") for r in records), any(r.get("utility") for r in records))


def _attack_cells(r: dict[str, Any], columns: tuple[bool, bool]) -> str:
    cells = ""
    if columns[0]:
        best = (r.get("multi_memory") or {}).get("memory") or {}
        summary = (r.get("multi_memory") or {}).get("summary") or {}
        cells += (f'<td>{format_number(best.get("value"))}</td><td>{"[" + format_number(best.get("ci_low")) + ", " + format_number(best.get("ci_high")) + "]" if best else "&ndash;"}</td>'
                  f'<td>{format_number(summary.get("distinct_memories_mean"), 2)}</td>')
    if columns[1]:
        attack = (r.get("concept_inversion") or {}).get("attack") or {}
        baseline = (r.get("concept_inversion") or {}).get("baseline") or {}
        cells += (f'<td>{format_number(attack.get("rate"))}</td><td>{rate_interval(attack)}</td>'
                  f'<td>{format_number(baseline.get("rate"))}</td>')
    if columns[2]:
        part = r.get("adversarial_prompt") or {}
        pre, asr = part.get("pre_asr") or {}, part.get("asr") or {}
        cells += f'<td>{format_number(pre.get("rate"))}</td><td>{format_number(asr.get("rate"))}</td><td>{rate_interval(asr)}</td>'
    if columns[3]:
        worst = (r.get("utility") or {}).get("worst") or {}
        cells += f'<td>{format_number(worst.get("ratio"))}</td><td class="l">{escape_text(worst.get("label") or "")}</td>'
    return cells


def _summary_table(records: list[dict[str, Any]]) -> str:
    columns = _attack_columns(records)
    extra = ("<th>best-of-M M</th><th>interval</th><th>distinct / image</th>" if columns[0] else "") + (
        "<th>CI success</th><th>Wilson interval</th><th>plain prompt</th>" if columns[1] else "") + (
        "<th>Pre-ASR</th><th>ASR</th><th>Wilson interval</th>" if columns[2] else "") + (
        '<th>utility ratio</th><th class="l">worst setting</th>' if columns[3] else "")
    rows = ['<tr><th class="l">checkpoint</th><th>step</th><th>memory M</th><th>interval</th><th>control M</th>'
            '<th>d_N</th><th>interval</th>'
            f'<th>distance</th><th>PSNR (dB)</th><th>NLL (E)</th><th>diverged</th>{extra}<th class="l">verdict</th>'
            '<th class="l">weights</th></tr>']
    for r in records:
        level = f"{round(float(r['confidence']) * 100)}% " if r.get("confidence") is not None else ""
        interval = (f"{level}[{format_number(r.get('ci_low'))}, {format_number(r.get('ci_high'))}]" if r.get("ci_low") is not None
                    else "&ndash;")
        memory = r.get("memory") or {}
        memory_interval = (f"[{format_number(memory.get('ci_low'))}, {format_number(memory.get('ci_high'))}]" if memory else "&ndash;")
        control = r.get("control_memory")
        control_cell = "off" if control is None else format_number(control.get("value"))
        verdict = r.get("verdict")
        cls = "" if verdict in (None, "inconclusive") else ("ok" if r.get("passed") else "bad")
        # file or folder names only; full paths and hashes are in the Inputs section
        weights = ", ".join(f"{k}: {Path(v).name}" for k, v in (r.get("weights") or {}).items() if v)
        weights = weights or "base model"
        cached = " (cached)" if r.get("from_cache") else ""
        rows.append(
            f'<tr><td class="l">{escape_text(r["name"])}</td><td>{escape_text(r.get("step") if r.get("step") is not None else "")}</td>'
            f'<td>{format_number(memory.get("value"))}</td><td>{memory_interval}</td><td>{escape_text(control_cell)}</td>'
            f'<td>{format_number(r.get("d_n"))}</td><td>{interval}</td><td>{escape_text(r.get("distance_kind") or "")}</td>'
            f'<td>{format_number(r.get("psnr_mean"), 2)}</td><td>{format_number(r.get("nll_mean"), 1)}</td><td>{escape_text(r.get("diverged") or 0)}</td>'
            f'{_attack_cells(r, columns)}<td class="l {cls}">{escape_text((verdict or "").upper())}{escape_text(cached)}</td><td class="l w"><code>{escape_text(weights)}</code></td></tr>'
        )
    return "<table>" + "".join(rows) + "</table>"


def _plot_or_note(png: str | None, alt: str, fallback: str = "") -> str:
    if png is not None:
        return image_tag(png, alt)
    return f'<p class="note">Plot "{escape_text(alt)}" needs matplotlib: <code>{escape_text(plots.INSTALL_HINT)}</code>.</p>{fallback}'


def _nll_table(erased: list[float], reference: list[float], normal: list[float]) -> str:
    def stats(values: list[float]) -> str:
        if not values:
            return "<td>0</td><td>&ndash;</td><td>&ndash;</td>"
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        return f"<td>{len(values)}</td><td>{mean:.1f}</td><td>{std:.1f}</td>"

    return ('<table><tr><th class="l">set</th><th>count</th><th>NLL mean</th><th>NLL std</th></tr>'
            f'<tr><td class="l">E (concept)</td>{stats(erased)}</tr><tr><td class="l">R (reference)</td>{stats(reference)}</tr>'
            f'<tr><td class="l">N (N(0, I))</td>{stats(normal)}</tr></table>')


def _images_table(part: dict[str, Any] | None, label: str, memory: list[float] | None = None) -> str:
    if not part:
        return ""
    rows = [f'<tr><th class="l">{escape_text(label)} image</th><th class="l">prompt</th><th>seed NLL</th><th>PSNR (dB)</th>'
            + ('<th>memory m</th>' if memory else '') + '<th class="l">diverged</th><th class="l">sha256</th></tr>']
    for index, image in enumerate(part["images"]):
        rows.append(f'<tr><td class="l">{escape_text(image["name"])}</td><td class="l">{escape_text(image["prompt"])}</td>'
                    f'<td>{format_number(image["nll"], 1)}</td><td>{format_number(image["psnr"], 2)}</td>'
                    + (f'<td>{format_number(memory[index], 2)}</td>' if memory else '')
                    + f'<td class="l">{escape_text(image.get("diverged") or "")}</td>'
                    f'<td class="l"><code>{escape_text(image["sha256"][:16])}</code></td></tr>')
    return "<table>" + "".join(rows) + "</table>"


def _grid(thumbnails: list[dict[str, str]]) -> str:
    if not thumbnails:
        return '<p class="note">No reconstructions stored for this checkpoint.</p>'
    pairs = []
    for t in thumbnails:
        pairs.append(f'<div class="pair">{image_tag(t["image"], "query " + t["name"], "thumb")}'
                     f'{image_tag(t["reconstruction"], "reconstruction " + t["name"], "thumb")}'
                     f'<div>{escape_text(t["name"])}: query | reconstruction</div></div>')
    return '<div class="grid">' + "".join(pairs) + "</div>"


def _memory_sections(record: dict[str, Any]) -> list[str]:
    result = record["probe"]
    erased, reference = result["erased"], result.get("reference")
    nll_e = [float(i["nll"]) for i in erased["images"]]
    nll_r = [float(i["nll"]) for i in reference["images"]] if reference else []
    normal = [float(v) for v in record.get("normal_nll") or []]
    psnr_e = [float(i["psnr"]) for i in erased["images"]]
    psnr_r = [float(i["psnr"]) for i in reference["images"]] if reference else []
    body = [
        "<h3>Seed NLL distributions</h3>",
        _plot_or_note(plots.nll_histograms(nll_e, nll_r, normal), "NLL histograms of E, R and N"),
        _nll_table(nll_e, nll_r, normal),
        "<h3>Reconstruction PSNR per image</h3>",
        _plot_or_note(plots.psnr_per_image([i["name"] for i in erased["images"]], psnr_e,
                                           [i["name"] for i in reference["images"]] if reference else [], psnr_r),
                      "PSNR per image"),
        "<h3>Query images and their reconstructions from the found seeds</h3>",
        _grid(record.get("thumbnails") or []),
        "<h3>Per image</h3>",
        _images_table(erased, "E", (result.get("memory") or {}).get("per_image")),
        _images_table(reference, "R"),
    ]
    control = result.get("control")
    if control:
        summary = record.get("control_memory") or {}
        body += [
            "<h3>Negative control</h3>",
            f"<p>Images no model can have learned (noise and patterns), each inverted with the concept's prompt and "
            f"with the empty prompt: {escape_text(summary.get('unet_evaluations', '?'))} more UNet evaluations. Their memory "
            f"M = {format_number(summary.get('value'))}; near 0 when the probe is informative.</p>",
            _images_table(control, "control", (result.get("control_memory") or {}).get("per_image")),
        ]
    else:
        body.append("<p>Negative control: off. Nothing shows that this model does not invert every image.</p>")
    return body


def _checkpoint_section(record: dict[str, Any], open_: bool) -> str:
    body = _memory_sections(record) if record.get("probe") else []
    if record.get("multi_memory"):
        body.append(multi_memory_section(record["multi_memory"]))
    if record.get("concept_inversion"):
        body.append(concept_inversion_section(record["concept_inversion"]))
    if record.get("adversarial_prompt"):
        body.append(adversarial_prompt_section(record["adversarial_prompt"]))
    if record.get("utility"):
        body.append(utility_section(record["utility"]))
    verdict = record.get("verdict")
    tag = "" if verdict is None else f" &mdash; {escape_text(verdict.upper())}"
    memory = (record.get("memory") or {}).get("value")
    notes = "".join(f'<p class="note">{escape_text(note)}</p>' for note in record.get("notes") or [])
    numbers = [f"memory M {format_number(memory)}, d_N {format_number(record.get('d_n'))}"] if record.get("probe") else []
    if record.get("multi_memory"):
        numbers.append(f"best-of-M M {format_number(((record['multi_memory'].get('memory')) or {}).get('value'))}")
    if record.get("concept_inversion"):
        numbers.append(f"attack success {format_number(((record['concept_inversion'].get('attack')) or {}).get('rate'))}")
    if record.get("adversarial_prompt"):
        numbers.append(f"ASR {format_number(((record['adversarial_prompt'].get('asr')) or {}).get('rate'))}")
    if record.get("utility"):
        numbers.append(f"utility ratio {format_number(((record['utility'].get('worst')) or {}).get('ratio'))}")
    return (f'<details{" open" if open_ else ""}><summary>{escape_text(record["name"])}: {", ".join(numbers)}{tag}</summary>'
            f'{notes}{"".join(body)}</details>')


def _inputs_section(report: dict[str, Any]) -> str:
    parts = []
    model = report.get("model") or {}
    parts.append(f"<p>Base model: <code>{escape_text(model.get('source'))}</code> "
                 f"({escape_text(', '.join(f'{k} {v}' for k, v in model.items() if k != 'source' and v is not None))})</p>")
    for key, label in (("concept_images", "Concept images E"), ("reference_images", "Reference images R")):
        part = (report.get("inputs") or {}).get(key)
        if not part:
            continue
        rows = "".join(f'<tr><td class="l">{escape_text(i["name"])}</td><td class="l">{escape_text(i["prompt"])}</td>'
                       f'<td class="l"><code>{escape_text(i["sha256"])}</code></td></tr>' for i in part["images"])
        folder = f" from <code>{escape_text(part['folder'])}</code>" if part.get("folder") else ""
        parts.append(f"<p>{escape_text(label)}: {part['count']} images{folder}</p><table><tr><th class='l'>file</th>"
                     f"<th class='l'>prompt</th><th class='l'>pixel sha256</th></tr>{rows}</table>")
    weight_rows = "".join(
        f'<tr><td class="l">{escape_text(r["name"])}</td><td class="l"><code>{escape_text(f)}</code></td><td class="l"><code>{escape_text(h)}</code></td></tr>'
        for r in report["checkpoints"] for f, h in (r.get("weight_sha256") or {}).items()
    )
    if weight_rows:
        parts.append("<p>Erased weights</p><table><tr><th class='l'>checkpoint</th><th class='l'>file</th>"
                     f"<th class='l'>sha256</th></tr>{weight_rows}</table>")
    return "".join(parts)


def _interval_of(record: dict[str, Any] | None, value: str) -> tuple[Any, Any, Any] | None:
    """(value, low, high) of an interval record ({value or rate, ci_low, ci_high}); None when missing."""
    return None if not record else (record[value], record["ci_low"], record["ci_high"])


# The by-step plots: heading, the threshold that draws the line, (value, low, high) of a record
# (None: not measured), the y label, the plot's title and its alt text.
_BY_STEP = [
    ("Memory score by training step", "max_memory", lambda r: _interval_of(r.get("memory"), "value"),
     "memory M", "Memory score M by checkpoint", "memory score against training step"),
    ("d_N by training step", "min_d_n",
     lambda r: None if r.get("d_n") is None else (r["d_n"], r["ci_low"], r["ci_high"]),
     "d_N", "Memory relative distance d_N by checkpoint", "d_N against training step"),
    ("Concept Inversion attack success by training step", "max_attack_success",
     lambda r: _interval_of((r.get("concept_inversion") or {}).get("attack"), "rate"),
     "attack success", "Concept Inversion success rate by checkpoint", "attack success against training step"),
    ("Adversarial-prompt ASR by training step", "max_asr",
     lambda r: _interval_of((r.get("adversarial_prompt") or {}).get("asr"), "rate"),
     "ASR", "Adversarial-prompt ASR by checkpoint", "ASR against training step"),
    ("Best-of-M memory score by training step", "max_multi_memory",
     lambda r: _interval_of((r.get("multi_memory") or {}).get("memory"), "value"),
     "best-of-M memory M", "Multi-memory: memory score with each image's best memory",
     "best-of-M memory score against training step"),
]


def render_report(report: dict[str, Any]) -> str:
    """The HTML text of a report dict (a gate report, or a probe result via `load_report`)."""
    records = report["checkpoints"]
    title = "unlearn_guard release gate" if report.get("verdict") is not None else "unlearn_guard probe"
    sections = [_verdict_block(report)]
    provenance = report.get("provenance") or {}
    sections.append(f'<p class="note">Created {escape_text(provenance.get("created_utc", ""))}; preset '
                    f'<code>{escape_text((report.get("config") or {}).get("preset"))}</code>, seed {escape_text(report.get("seed"))}, '
                    f'device {escape_text(report.get("device"))}, dtype {escape_text(report.get("dtype"))}.</p>')
    if not plots.available():
        sections.append(f'<p class="note" id="no-plots">Plots need matplotlib: <code>{escape_text(plots.INSTALL_HINT)}</code>; '
                        "this report shows tables only.</p>")
    sections += ["<h2>Checkpoints</h2>", f'<div class="scroll">{_summary_table(records)}</div>']
    thresholds = report.get("thresholds") or {}
    for heading, threshold, numbers_of, label, plot_title, alt in _BY_STEP:
        stepped = [(r["step"], numbers) for r in records
                   if r.get("step") is not None and (numbers := numbers_of(r)) is not None]
        if len(stepped) >= 2 and thresholds.get(threshold) is not None:
            steps, numbers = [step for step, _ in stepped], [n for _, n in stepped]
            sections += [f"<h2>{heading}</h2>", _plot_or_note(
                plots.signal_by_step(steps, *([float(n[i]) for n in numbers] for i in range(3)),
                                     float(thresholds[threshold]), label, 1.0, plot_title), alt)]
    sections.append("<h2>Per checkpoint</h2>")
    sections += [_checkpoint_section(r, open_=len(records) <= 2 or i == len(records) - 1)
                 for i, r in enumerate(records)]
    sections += ["<h2>Inputs</h2>", _inputs_section(report),
                 "<h2>Probe config</h2>", f"<pre>{escape_text(json.dumps(report.get('config'), indent=1))}</pre>",
                 *(["<h2>Attacks</h2>", f"<pre>{escape_text(json.dumps(report['attacks'], indent=1))}</pre>"]
                   if report.get("attacks") else []),
                 "<h2>Provenance</h2>", f"<pre>{escape_text(json.dumps(provenance, indent=1))}</pre>"]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{escape_text(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{escape_text(title)}</h1>{''.join(sections)}"
        f"<div id=\"image-check\" class=\"note\">images-pending</div><script>{_IMAGE_CHECK}</script></body></html>\n"
    )
