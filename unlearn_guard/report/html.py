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

import html
import json
import math
from pathlib import Path
from typing import Any

from . import plots
from .images import data_uri

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


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "&ndash;"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return _e(value)
    if math.isnan(number):
        return "nan"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return f"{number:.{digits}f}"


def _img(png_b64: str, alt: str, css: str = "plot") -> str:
    return f'<img class="{css}" alt="{_e(alt)}" src="{data_uri(png_b64)}">'


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

        css, title = "fail", f"FAIL &mdash; {_e(failure_label(report.get('failed') or []))}"
    reasons = "".join(f"<li>{_e(r)}</li>" for r in report.get("reasons") or [])
    thresholds = report.get("thresholds") or {}
    parts = []
    if thresholds.get("max_memory") is not None:
        parts.append(f"max memory {_num(thresholds['max_memory'], 3)} (upper end of the interval)")
    if thresholds.get("min_d_n") is not None:
        parts.append(f"min d_N {_num(thresholds['min_d_n'], 3)}")
    if thresholds.get("max_psnr") is not None:
        parts.append(f"max mean PSNR {_num(thresholds['max_psnr'], 2)} dB")
    if thresholds.get("max_multi_memory") is not None:
        parts.append(f"max best-of-M memory {_num(thresholds['max_multi_memory'], 3)} (multi-memory, upper end)")
    if thresholds.get("max_attack_success") is not None:
        parts.append(f"max attack success {_num(thresholds['max_attack_success'], 3)} (concept inversion, Wilson "
                     "upper end)")
    if thresholds.get("max_asr") is not None:
        parts.append(f"max ASR {_num(thresholds['max_asr'], 3)} (adversarial prompts, Wilson upper end)")
    if thresholds.get("min_utility") is not None:
        parts.append(f"min utility {_num(thresholds['min_utility'], 3)} (worst-case ratio to the base model)")
    line = f"<div>Thresholds: {_e(', '.join(parts))}</div>" if parts else ""
    return (f'<div class="verdict {css}" id="verdict" data-verdict="{_e(verdict or "none")}">'
            f'<div class="big">{title}</div>{line}<ul>{reasons}</ul></div>')


def _attack_columns(records: list[dict[str, Any]]) -> tuple[bool, bool, bool, bool]:
    return (any(r.get("multi_memory") for r in records), any(r.get("concept_inversion") for r in records),
            any(r.get("adversarial_prompt") for r in records), any(r.get("utility") for r in records))


def _rate_interval(rate: dict[str, Any]) -> str:
    return "[" + _num(rate.get("ci_low")) + ", " + _num(rate.get("ci_high")) + "]" if rate else "&ndash;"


def _attack_cells(r: dict[str, Any], columns: tuple[bool, bool]) -> str:
    cells = ""
    if columns[0]:
        best = (r.get("multi_memory") or {}).get("memory") or {}
        summary = (r.get("multi_memory") or {}).get("summary") or {}
        cells += (f'<td>{_num(best.get("value"))}</td><td>{"[" + _num(best.get("ci_low")) + ", " + _num(best.get("ci_high")) + "]" if best else "&ndash;"}</td>'
                  f'<td>{_num(summary.get("distinct_memories_mean"), 2)}</td>')
    if columns[1]:
        attack = (r.get("concept_inversion") or {}).get("attack") or {}
        baseline = (r.get("concept_inversion") or {}).get("baseline") or {}
        cells += (f'<td>{_num(attack.get("rate"))}</td><td>{_rate_interval(attack)}</td>'
                  f'<td>{_num(baseline.get("rate"))}</td>')
    if columns[2]:
        part = r.get("adversarial_prompt") or {}
        pre, asr = part.get("pre_asr") or {}, part.get("asr") or {}
        cells += f'<td>{_num(pre.get("rate"))}</td><td>{_num(asr.get("rate"))}</td><td>{_rate_interval(asr)}</td>'
    if columns[3]:
        worst = (r.get("utility") or {}).get("worst") or {}
        cells += f'<td>{_num(worst.get("ratio"))}</td><td class="l">{_e(worst.get("label") or "")}</td>'
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
        interval = (f"{level}[{_num(r.get('ci_low'))}, {_num(r.get('ci_high'))}]" if r.get("ci_low") is not None
                    else "&ndash;")
        memory = r.get("memory") or {}
        memory_interval = (f"[{_num(memory.get('ci_low'))}, {_num(memory.get('ci_high'))}]" if memory else "&ndash;")
        control = r.get("control_memory")
        control_cell = "off" if control is None else _num(control.get("value"))
        verdict = r.get("verdict")
        cls = "" if verdict in (None, "inconclusive") else ("ok" if r.get("passed") else "bad")
        # file or folder names only; full paths and hashes are in the Inputs section
        weights = ", ".join(f"{k}: {Path(v).name}" for k, v in (r.get("weights") or {}).items() if v)
        weights = weights or "base model"
        cached = " (cached)" if r.get("from_cache") else ""
        rows.append(
            f'<tr><td class="l">{_e(r["name"])}</td><td>{_e(r.get("step") if r.get("step") is not None else "")}</td>'
            f'<td>{_num(memory.get("value"))}</td><td>{memory_interval}</td><td>{_e(control_cell)}</td>'
            f'<td>{_num(r.get("d_n"))}</td><td>{interval}</td><td>{_e(r.get("distance_kind") or "")}</td>'
            f'<td>{_num(r.get("psnr_mean"), 2)}</td><td>{_num(r.get("nll_mean"), 1)}</td><td>{_e(r.get("diverged") or 0)}</td>'
            f'{_attack_cells(r, columns)}<td class="l {cls}">{_e((verdict or "").upper())}{_e(cached)}</td><td class="l w"><code>{_e(weights)}</code></td></tr>'
        )
    return "<table>" + "".join(rows) + "</table>"


def _plot_or_note(png: str | None, alt: str, fallback: str = "") -> str:
    if png is not None:
        return _img(png, alt)
    return f'<p class="note">Plot "{_e(alt)}" needs matplotlib: <code>{_e(plots.INSTALL_HINT)}</code>.</p>{fallback}'


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
    rows = [f'<tr><th class="l">{_e(label)} image</th><th class="l">prompt</th><th>seed NLL</th><th>PSNR (dB)</th>'
            + ('<th>memory m</th>' if memory else '') + '<th class="l">diverged</th><th class="l">sha256</th></tr>']
    for index, image in enumerate(part["images"]):
        rows.append(f'<tr><td class="l">{_e(image["name"])}</td><td class="l">{_e(image["prompt"])}</td>'
                    f'<td>{_num(image["nll"], 1)}</td><td>{_num(image["psnr"], 2)}</td>'
                    + (f'<td>{_num(memory[index], 2)}</td>' if memory else '')
                    + f'<td class="l">{_e(image.get("diverged") or "")}</td>'
                    f'<td class="l"><code>{_e(image["sha256"][:16])}</code></td></tr>')
    return "<table>" + "".join(rows) + "</table>"


def _grid(thumbnails: list[dict[str, str]]) -> str:
    if not thumbnails:
        return '<p class="note">No reconstructions stored for this checkpoint.</p>'
    pairs = []
    for t in thumbnails:
        pairs.append(f'<div class="pair">{_img(t["image"], "query " + t["name"], "thumb")}'
                     f'{_img(t["reconstruction"], "reconstruction " + t["name"], "thumb")}'
                     f'<div>{_e(t["name"])}: query | reconstruction</div></div>')
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
            f"with the empty prompt: {_e(summary.get('unet_evaluations', '?'))} more UNet evaluations. Their memory "
            f"M = {_num(summary.get('value'))}; near 0 when the probe is informative.</p>",
            _images_table(control, "control", (result.get("control_memory") or {}).get("per_image")),
        ]
    else:
        body.append("<p>Negative control: off. Nothing shows that this model does not invert every image.</p>")
    return body


def _cosine_table(matrix: list[list[Any]]) -> str:
    """The (M, M) cosine-distance matrix, darker for farther apart (row/column 0: the image's own seed)."""
    header = "".join(f"<th>{'own' if j == 0 else j}</th>" for j in range(len(matrix)))
    rows = []
    for i, row in enumerate(matrix):
        cells = []
        for value in row:
            try:
                shade = max(0.0, min(1.0, float(value)))
            except (TypeError, ValueError):
                shade = 0.0
            shade = 0.0 if math.isnan(shade) else shade
            tone = int(255 - 120 * shade)
            cells.append(f'<td style="background:rgb({tone},{tone},255)">{_num(value)}</td>')
        rows.append(f"<tr><th>{'own' if i == 0 else i}</th>{''.join(cells)}</tr>")
    return f'<table class="cos"><tr><th></th>{header}</tr>{"".join(rows)}</table>'


def _distinct_text(image: dict[str, Any]) -> str:
    count = image.get("distinct_memories")
    if count is None:
        return "distinct memories not counted (no memory score: it needs a reference set whose seeds are likelier than N)"
    return f"{_e(count)} distinct memories reconstruct it (green border)"


def _multi_memory_section(part: dict[str, Any]) -> str:
    search, summary = part.get("search") or {}, part.get("summary") or {}
    best = part.get("memory") or {}
    lines = [
        "<h3>Multi-memory search (Sequential Inversion Block)</h3>",
        f'<p>M = {_e(search.get("memories"))} memories per image (memory 0: the image\'s own seed; memory j from support '
        f'image j), {_e(search.get("variant"))} variant, fidelity {_e(search.get("fidelity"))} '
        f'({_e(search.get("resolved_decoder_steps"))} decoder steps). Distinct memories that reconstruct an image: '
        f'{_num(summary.get("distinct_memories_mean"), 2)} per image; mean cosine distance '
        f'{_num(summary.get("mean_cosine_among"))} among memories and {_num(summary.get("mean_cosine_to_own"))} to the '
        f'own seed (MoFC on SD 1.4: 0.58 to 0.69); mean PSNR of the support-started memories '
        f'{_num(summary.get("psnr_mean_support_memories"), 2)} dB (MoFC: about 20 to 28 dB). Memory score with each '
        f'image\'s best memory: {_num(best.get("value"))} [{_num(best.get("ci_low"))}, {_num(best.get("ci_high"))}] '
        f'(own seed only: {_num(summary.get("memory_single"))}).</p>',
    ]
    images = {image["name"]: image for image in part.get("images") or []}
    for row in part.get("thumbnails") or []:
        image = images.get(row["name"]) or {}
        memories = image.get("memories") or []
        tiles = [f'<div class="mem">{_img(row["image"], "query " + row["name"], "thumb")}<div>query</div></div>']
        for j, png in enumerate(row["memories"]):
            memory = memories[j] if j < len(memories) else {}
            label = "own seed" if j == 0 else f"from {memory.get('support')}"
            css = "mem distinct" if memory.get("distinct") else "mem"
            tiles.append(f'<div class="{css}">{_img(png, f"memory {j} of " + row["name"], "thumb")}'
                         f'<div>{_e(label)}<br>PSNR {_num(memory.get("psnr"), 1)} dB, m {_num(memory.get("memory"), 2)}'
                         f'{"<br>distinct" if memory.get("distinct") else ""}</div></div>')
        lines.append(f'<p class="note">{_e(row["name"])}: {_distinct_text(image)}</p>'
                     f'<div class="memrow">{"".join(tiles)}</div>')
        if image.get("cosine"):
            lines.append(_cosine_table(image["cosine"]))
    others = [image for name, image in images.items() if name not in {r["name"] for r in part.get("thumbnails") or []}]
    if others:
        lines.append("<details><summary>Cosine-distance matrices of the other images</summary>"
                     + "".join(f"<p class='note'>{_e(i['name'])}: {_distinct_text(i)}</p>"
                               + _cosine_table(i["cosine"]) for i in others) + "</details>")
    return "".join(lines)


def _concept_inversion_section(part: dict[str, Any]) -> str:
    attack, baseline = part.get("attack") or {}, part.get("baseline") or {}
    config, embedding = part.get("config") or {}, part.get("embedding") or {}
    level = round(float(attack.get("confidence", 0.95)) * 100)
    tiles = "".join(
        f'<div class="gen{" yes" if t["verdict"] else ""}">{_img(t["image"], "generation " + str(i), "thumb")}'
        f'<div>{"concept" if t["verdict"] else "not"}</div></div>' for i, t in enumerate(part.get("thumbnails") or []))
    return (
        "<h3>Concept Inversion</h3>"
        f'<p>Textual inversion of token <code>{_e(embedding.get("token"))}</code> (from '
        f'<code>{_e(embedding.get("init_token"))}</code>, {_e(config.get("steps"))} steps, lr {_e(config.get("lr"))}, '
        f'{_num(part.get("seconds"), 1)} s) on the concept images; judge <code>{_e(part.get("judge"))}</code>.</p>'
        f'<p>Attack success from <code>{_e(attack.get("prompt"))}</code>: {_e(attack.get("successes"))}/{_e(attack.get("n"))} = '
        f'{_num(attack.get("rate"))} [{_num(attack.get("ci_low"))}, {_num(attack.get("ci_high"))}] ({level}% Wilson); '
        f'the concept images\' own prompts ({_e(baseline.get("prompt"))}): {_num(baseline.get("rate"))} '
        f'[{_num(baseline.get("ci_low"))}, {_num(baseline.get("ci_high"))}].</p>'
        + (f'<p class="note">Learned token saved to <code>{_e(part.get("saved_to"))}</code> (diffusers: '
           f'<code>pipe.load_textual_inversion(folder, token=...)</code>).</p>' if part.get("saved_to") else "")
        + (f'<p class="note">Generations with the token (red border: the judge calls it the concept)</p>'
           f'<div class="grid">{tiles}</div>' if tiles else "")
    )


def _adversarial_prompt_section(part: dict[str, Any]) -> str:
    config, judge = part.get("config") or {}, part.get("judge") or {}
    pre, asr = part.get("pre_asr") or {}, part.get("asr") or {}
    level = round(float(asr.get("confidence", 0.95)) * 100)
    targets = part.get("targets") or {}
    target_text = (f'the {len(targets.get("images") or [])} images of <code>{_e(targets.get("folder"))}</code>'
                   if targets.get("source") == "folder" else _e(targets.get("source", "")))
    csv = part.get("prompts_csv") or {}
    judge_details = ", ".join(x for x in (
        f'{judge.get("package")} {judge.get("version")}' if judge.get("package") else "",
        f'threshold {judge.get("threshold")}' if judge.get("threshold") is not None else "") if x)
    rows = ['<tr><th>#</th><th class="l">prompt</th><th>seed</th><th class="l">plain prompt</th><th class="l">attack</th>'
            '<th>step</th><th>timestep</th><th class="l">adversarial prompt</th></tr>']
    for p in part.get("prompts") or []:
        pre_cell = '<span class="bad">concept</span>' if p.get("pre_success") else "not"
        attack_cell = ("&ndash;" if not p.get("attacked") else
                       '<span class="bad">broken</span>' if p.get("success") else "held")
        rows.append(f'<tr><td>{_e(p.get("index"))}</td><td class="l w">{_e(p.get("prompt"))}</td><td>{_e(p.get("seed"))}</td>'
                    f'<td class="l">{pre_cell}</td><td class="l">{attack_cell}</td>'
                    f'<td>{_e(p.get("step") if p.get("step") is not None else "")}</td>'
                    f'<td>{_e(p.get("timestep") if p.get("timestep") is not None else "")}</td>'
                    f'<td class="l w"><code>{_e(p.get("adversarial_prompt") or "")}</code></td></tr>')
    tiles = "".join(
        f'<div class="gen{" yes" if p.get("broken") else ""}">{_img(p["image"], "judged image of prompt " + str(p.get("index")), "thumb")}'
        f'<div>#{_e(p.get("index"))} {"concept" if p.get("broken") else "not"}</div></div>'
        for p in part.get("prompts") or [] if p.get("image"))
    seconds = (part.get("seconds") or {}).get("total")
    return (
        "<h3>Adversarial prompts (UnlearnDiffAtk)</h3>"
        f'<p>Preset <code>{_e(config.get("preset"))}</code>: {_e(config.get("num_tokens"))} tokens '
        f'({_e(config.get("placement"))}), {len(config.get("timesteps") or [])} timesteps x '
        f'{_e(config.get("steps_per_timestep"))} steps at lr {_e(config.get("lr"))}, generations with '
        f'{_e(config.get("num_steps"))} DDIM steps at guidance {_e(config.get("guidance_scale"))}; judge '
        f'<code>{_e(judge.get("spec") or judge.get("name"))}</code>{" (" + _e(judge_details) + ")" if judge_details else ""}; '
        f'targets: {target_text}; prompts from <code>{_e(csv.get("path"))}</code> '
        f'(sha256 <code>{_e(str(csv.get("sha256", ""))[:16])}</code>){", " + _num(seconds, 1) + " s" if seconds is not None else ""}.</p>'
        f'<p>Pre-ASR (the plain prompts already show the concept): {_e(pre.get("successes"))}/{_e(pre.get("n"))} = '
        f'{_num(pre.get("rate"))} {_rate_interval(pre)}; ASR (before or after the attack): '
        f'{_e(asr.get("successes"))}/{_e(asr.get("n"))} = {_num(asr.get("rate"))} {_rate_interval(asr)} '
        f'({level}% Wilson); {_e(part.get("attacked"))} prompts attacked.</p>'
        f'<div class="scroll"><table>{"".join(rows)}</table></div>'
        + (f'<p class="note">The judged image of each prompt: the plain generation when it already showed the concept, '
           f'else the attack\'s last judged generation (red border: the judge calls it the concept)</p>'
           f'<div class="grid">{tiles}</div>' if tiles else "")
    )


def _utility_section(part: dict[str, Any]) -> str:
    config = part.get("config") or {}
    shapes = config.get("metric") == "shape-accuracy"
    items = config.get("shapes") or config.get("prompts") or []
    header = "".join(f'<th>{_e(item)}</th>' for item in items)
    rows = [f'<tr><th class="l">setting</th>{header}<th>mean</th><th>base mean</th><th>ratio</th></tr>']
    worst = (part.get("worst") or {}).get("label")
    for setting in part.get("settings") or []:
        cells = "".join(f'<td>{_num(i["checkpoint"]["value"], 2)} / {_num(i["base"]["value"], 2)}</td>'
                        for i in setting.get("items") or [])
        css = ' style="font-weight:600"' if setting.get("label") == worst else ""  # the one that decides
        rows.append(f'<tr><td class="l">{_e(setting.get("label"))}</td>{cells}'
                    f'<td>{_num((setting.get("checkpoint_mean") or {}).get("value"))}</td>'
                    f'<td>{_num((setting.get("base_mean") or {}).get("value"))}</td><td{css}>{_num(setting.get("ratio"))}</td></tr>')
    what = "accuracy of each kept shape's prompt (the shipped classifier)" if shapes else "CLIP score of each prompt"
    return (
        "<h3>Utility (against the base model)</h3>"
        f'<p>The {_e(what)}: checkpoint / base, {_e(config.get("n"))} images per item and setting (the same seeds for '
        f'both); the worst setting\'s ratio decides: {_num((part.get("worst") or {}).get("ratio"))} under '
        f'<code>{_e(worst)}</code>.</p>'
        f'<div class="scroll"><table>{"".join(rows)}</table></div>'
    )


def _checkpoint_section(record: dict[str, Any], open_: bool) -> str:
    body = _memory_sections(record) if record.get("probe") else []
    if record.get("multi_memory"):
        body.append(_multi_memory_section(record["multi_memory"]))
    if record.get("concept_inversion"):
        body.append(_concept_inversion_section(record["concept_inversion"]))
    if record.get("adversarial_prompt"):
        body.append(_adversarial_prompt_section(record["adversarial_prompt"]))
    if record.get("utility"):
        body.append(_utility_section(record["utility"]))
    verdict = record.get("verdict")
    tag = "" if verdict is None else f" &mdash; {_e(verdict.upper())}"
    memory = (record.get("memory") or {}).get("value")
    notes = "".join(f'<p class="note">{_e(note)}</p>' for note in record.get("notes") or [])
    numbers = [f"memory M {_num(memory)}, d_N {_num(record.get('d_n'))}"] if record.get("probe") else []
    if record.get("multi_memory"):
        numbers.append(f"best-of-M M {_num(((record['multi_memory'].get('memory')) or {}).get('value'))}")
    if record.get("concept_inversion"):
        numbers.append(f"attack success {_num(((record['concept_inversion'].get('attack')) or {}).get('rate'))}")
    if record.get("adversarial_prompt"):
        numbers.append(f"ASR {_num(((record['adversarial_prompt'].get('asr')) or {}).get('rate'))}")
    if record.get("utility"):
        numbers.append(f"utility ratio {_num(((record['utility'].get('worst')) or {}).get('ratio'))}")
    return (f'<details{" open" if open_ else ""}><summary>{_e(record["name"])}: {", ".join(numbers)}{tag}</summary>'
            f'{notes}{"".join(body)}</details>')


def _inputs_section(report: dict[str, Any]) -> str:
    parts = []
    model = report.get("model") or {}
    parts.append(f"<p>Base model: <code>{_e(model.get('source'))}</code> "
                 f"({_e(', '.join(f'{k} {v}' for k, v in model.items() if k != 'source' and v is not None))})</p>")
    for key, label in (("concept_images", "Concept images E"), ("reference_images", "Reference images R")):
        part = (report.get("inputs") or {}).get(key)
        if not part:
            continue
        rows = "".join(f'<tr><td class="l">{_e(i["name"])}</td><td class="l">{_e(i["prompt"])}</td>'
                       f'<td class="l"><code>{_e(i["sha256"])}</code></td></tr>' for i in part["images"])
        folder = f" from <code>{_e(part['folder'])}</code>" if part.get("folder") else ""
        parts.append(f"<p>{_e(label)}: {part['count']} images{folder}</p><table><tr><th class='l'>file</th>"
                     f"<th class='l'>prompt</th><th class='l'>pixel sha256</th></tr>{rows}</table>")
    weight_rows = "".join(
        f'<tr><td class="l">{_e(r["name"])}</td><td class="l"><code>{_e(f)}</code></td><td class="l"><code>{_e(h)}</code></td></tr>'
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
    sections.append(f'<p class="note">Created {_e(provenance.get("created_utc", ""))}; preset '
                    f'<code>{_e((report.get("config") or {}).get("preset"))}</code>, seed {_e(report.get("seed"))}, '
                    f'device {_e(report.get("device"))}, dtype {_e(report.get("dtype"))}.</p>')
    if not plots.available():
        sections.append(f'<p class="note" id="no-plots">Plots need matplotlib: <code>{_e(plots.INSTALL_HINT)}</code>; '
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
                 "<h2>Probe config</h2>", f"<pre>{_e(json.dumps(report.get('config'), indent=1))}</pre>",
                 *(["<h2>Attacks</h2>", f"<pre>{_e(json.dumps(report['attacks'], indent=1))}</pre>"]
                   if report.get("attacks") else []),
                 "<h2>Provenance</h2>", f"<pre>{_e(json.dumps(provenance, indent=1))}</pre>"]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_e(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{_e(title)}</h1>{''.join(sections)}"
        f"<div id=\"image-check\" class=\"note\">images-pending</div><script>{_IMAGE_CHECK}</script></body></html>\n"
    )
