"""The report's sections for the attacks beside the memory probe: multi-memory search, Concept
Inversion, adversarial prompts (UnlearnDiffAtk) and the utility check. Each takes its part of a
checkpoint record (as the gate writes it) and returns HTML; all text is escaped."""

from __future__ import annotations

import math
from typing import Any

from .markup import escape_text, format_number, image_tag, rate_interval


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
            cells.append(f'<td style="background:rgb({tone},{tone},255)">{format_number(value)}</td>')
        rows.append(f"<tr><th>{'own' if i == 0 else i}</th>{''.join(cells)}</tr>")
    return f'<table class="cos"><tr><th></th>{header}</tr>{"".join(rows)}</table>'


def _distinct_text(image: dict[str, Any]) -> str:
    count = image.get("distinct_memories")
    if count is None:
        return "distinct memories not counted (no memory score: it needs a reference set whose seeds are likelier than N)"
    return f"{escape_text(count)} distinct memories reconstruct it (green border)"


def multi_memory_section(part: dict[str, Any]) -> str:
    """The multi-memory search: each image's memories side by side and their cosine-distance matrix."""
    search, summary = part.get("search") or {}, part.get("summary") or {}
    best = part.get("memory") or {}
    lines = [
        "<h3>Multi-memory search (Sequential Inversion Block)</h3>",
        f'<p>M = {escape_text(search.get("memories"))} memories per image (memory 0: the image\'s own seed; memory j from support '
        f'image j), {escape_text(search.get("variant"))} variant, fidelity {escape_text(search.get("fidelity"))} '
        f'({escape_text(search.get("resolved_decoder_steps"))} decoder steps). Distinct memories that reconstruct an image: '
        f'{format_number(summary.get("distinct_memories_mean"), 2)} per image; mean cosine distance '
        f'{format_number(summary.get("mean_cosine_among"))} among memories and {format_number(summary.get("mean_cosine_to_own"))} to the '
        f'own seed (MoFC on SD 1.4: 0.58 to 0.69); mean PSNR of the support-started memories '
        f'{format_number(summary.get("psnr_mean_support_memories"), 2)} dB (MoFC: about 20 to 28 dB). Memory score with each '
        f'image\'s best memory: {format_number(best.get("value"))} [{format_number(best.get("ci_low"))}, {format_number(best.get("ci_high"))}] '
        f'(own seed only: {format_number(summary.get("memory_single"))}).</p>',
    ]
    images = {image["name"]: image for image in part.get("images") or []}
    for row in part.get("thumbnails") or []:
        image = images.get(row["name"]) or {}
        memories = image.get("memories") or []
        tiles = [f'<div class="mem">{image_tag(row["image"], "query " + row["name"], "thumb")}<div>query</div></div>']
        for j, png in enumerate(row["memories"]):
            memory = memories[j] if j < len(memories) else {}
            label = "own seed" if j == 0 else f"from {memory.get('support')}"
            css = "mem distinct" if memory.get("distinct") else "mem"
            tiles.append(f'<div class="{css}">{image_tag(png, f"memory {j} of " + row["name"], "thumb")}'
                         f'<div>{escape_text(label)}<br>PSNR {format_number(memory.get("psnr"), 1)} dB, m {format_number(memory.get("memory"), 2)}'
                         f'{"<br>distinct" if memory.get("distinct") else ""}</div></div>')
        lines.append(f'<p class="note">{escape_text(row["name"])}: {_distinct_text(image)}</p>'
                     f'<div class="memrow">{"".join(tiles)}</div>')
        if image.get("cosine"):
            lines.append(_cosine_table(image["cosine"]))
    others = [image for name, image in images.items() if name not in {r["name"] for r in part.get("thumbnails") or []}]
    if others:
        lines.append("<details><summary>Cosine-distance matrices of the other images</summary>"
                     + "".join(f"<p class='note'>{escape_text(i['name'])}: {_distinct_text(i)}</p>"
                               + _cosine_table(i["cosine"]) for i in others) + "</details>")
    return "".join(lines)


def concept_inversion_section(part: dict[str, Any]) -> str:
    """Concept Inversion: the learned token, its attack success and the judged generations."""
    attack, baseline = part.get("attack") or {}, part.get("baseline") or {}
    config, embedding = part.get("config") or {}, part.get("embedding") or {}
    level = round(float(attack.get("confidence", 0.95)) * 100)
    tiles = "".join(
        f'<div class="gen{" yes" if t["verdict"] else ""}">{image_tag(t["image"], "generation " + str(i), "thumb")}'
        f'<div>{"concept" if t["verdict"] else "not"}</div></div>' for i, t in enumerate(part.get("thumbnails") or []))
    return (
        "<h3>Concept Inversion</h3>"
        f'<p>Textual inversion of token <code>{escape_text(embedding.get("token"))}</code> (from '
        f'<code>{escape_text(embedding.get("init_token"))}</code>, {escape_text(config.get("steps"))} steps, lr {escape_text(config.get("lr"))}, '
        f'{format_number(part.get("seconds"), 1)} s) on the concept images; judge <code>{escape_text(part.get("judge"))}</code>.</p>'
        f'<p>Attack success from <code>{escape_text(attack.get("prompt"))}</code>: {escape_text(attack.get("successes"))}/{escape_text(attack.get("n"))} = '
        f'{format_number(attack.get("rate"))} [{format_number(attack.get("ci_low"))}, {format_number(attack.get("ci_high"))}] ({level}% Wilson); '
        f'the concept images\' own prompts ({escape_text(baseline.get("prompt"))}): {format_number(baseline.get("rate"))} '
        f'[{format_number(baseline.get("ci_low"))}, {format_number(baseline.get("ci_high"))}].</p>'
        + (f'<p class="note">Learned token saved to <code>{escape_text(part.get("saved_to"))}</code> (diffusers: '
           f'<code>pipe.load_textual_inversion(folder, token=...)</code>).</p>' if part.get("saved_to") else "")
        + (f'<p class="note">Generations with the token (red border: the judge calls it the concept)</p>'
           f'<div class="grid">{tiles}</div>' if tiles else "")
    )


def adversarial_prompt_section(part: dict[str, Any]) -> str:
    """UnlearnDiffAtk: Pre-ASR and ASR, each prompt's outcome and the judged images."""
    config, judge = part.get("config") or {}, part.get("judge") or {}
    pre, asr = part.get("pre_asr") or {}, part.get("asr") or {}
    level = round(float(asr.get("confidence", 0.95)) * 100)
    targets = part.get("targets") or {}
    target_text = (f'the {len(targets.get("images") or [])} images of <code>{escape_text(targets.get("folder"))}</code>'
                   if targets.get("source") == "folder" else escape_text(targets.get("source", "")))
    csv = part.get("prompts_csv") or {}
    judge_details = ", ".join(x for x in (
        f'{judge.get("package")} {judge.get("version")}' if judge.get("package") else "",
        f'threshold {judge.get("threshold")}' if judge.get("threshold") is not None else "") if x)
    rows = ['<tr><th>#</th><th class="l">prompt</th><th>seed</th><th class="l">plain prompt</th><th class="l">attack</th>'
            '<th>step</th><th>timestep</th><th>judge score</th><th class="l">adversarial prompt</th></tr>']
    for p in part.get("prompts") or []:
        pre_cell = '<span class="bad">concept</span>' if p.get("pre_success") else "not"
        attack_cell = ("&ndash;" if not p.get("attacked") else
                       '<span class="bad">broken</span>' if p.get("success") else "held")
        rows.append(f'<tr><td>{escape_text(p.get("index"))}</td><td class="l w">{escape_text(p.get("prompt"))}</td><td>{escape_text(p.get("seed"))}</td>'
                    f'<td class="l">{pre_cell}</td><td class="l">{attack_cell}</td>'
                    f'<td>{escape_text(p.get("step") if p.get("step") is not None else "")}</td>'
                    f'<td>{escape_text(p.get("timestep") if p.get("timestep") is not None else "")}</td>'
                    f'<td>{format_number(p.get("score"))}</td>'
                    f'<td class="l w"><code>{escape_text(p.get("adversarial_prompt") or "")}</code></td></tr>')
    tiles = "".join(
        f'<div class="gen{" yes" if p.get("broken") else ""}">{image_tag(p["image"], "judged image of prompt " + str(p.get("index")), "thumb")}'
        f'<div>#{escape_text(p.get("index"))} {"concept" if p.get("broken") else "not"}</div></div>'
        for p in part.get("prompts") or [] if p.get("image"))
    seconds = (part.get("seconds") or {}).get("total")
    return (
        "<h3>Adversarial prompts (UnlearnDiffAtk)</h3>"
        f'<p>Preset <code>{escape_text(config.get("preset"))}</code>: {escape_text(config.get("num_tokens"))} tokens '
        f'({escape_text(config.get("placement"))}), {len(config.get("timesteps") or [])} timesteps x '
        f'{escape_text(config.get("steps_per_timestep"))} steps at lr {escape_text(config.get("lr"))}, generations with '
        f'{escape_text(config.get("num_steps"))} DDIM steps at guidance {escape_text(config.get("guidance_scale"))}; judge '
        f'<code>{escape_text(judge.get("spec") or judge.get("name"))}</code>{" (" + escape_text(judge_details) + ")" if judge_details else ""}; '
        f'targets: {target_text}; prompts from <code>{escape_text(csv.get("path"))}</code> '
        f'(sha256 <code>{escape_text(str(csv.get("sha256", ""))[:16])}</code>){", " + format_number(seconds, 1) + " s" if seconds is not None else ""}.</p>'
        f'<p>Pre-ASR (the plain prompts already show the concept): {escape_text(pre.get("successes"))}/{escape_text(pre.get("n"))} = '
        f'{format_number(pre.get("rate"))} {rate_interval(pre)}; ASR (before or after the attack): '
        f'{escape_text(asr.get("successes"))}/{escape_text(asr.get("n"))} = {format_number(asr.get("rate"))} {rate_interval(asr)} '
        f'({level}% Wilson); {escape_text(part.get("attacked"))} prompts attacked.</p>'
        f'<div class="scroll"><table>{"".join(rows)}</table></div>'
        + (f'<p class="note">The judged image of each prompt: the plain generation when it already showed the concept, '
           f'else the attack\'s last judged generation (red border: the judge calls it the concept)</p>'
           f'<div class="grid">{tiles}</div>' if tiles else "")
    )


def utility_section(part: dict[str, Any]) -> str:
    """The utility check: checkpoint against base per sampling setting and kept item."""
    config = part.get("config") or {}
    shapes = config.get("metric") == "shape-accuracy"
    items = config.get("shapes") or config.get("prompts") or []
    header = "".join(f'<th>{escape_text(item)}</th>' for item in items)
    rows = [f'<tr><th class="l">setting</th>{header}<th>mean</th><th>base mean</th><th>ratio</th></tr>']
    worst = (part.get("worst") or {}).get("label")
    for setting in part.get("settings") or []:
        cells = "".join(f'<td>{format_number(i["checkpoint"]["value"], 2)} / {format_number(i["base"]["value"], 2)}</td>'
                        for i in setting.get("items") or [])
        css = ' style="font-weight:600"' if setting.get("label") == worst else ""  # the one that decides
        rows.append(f'<tr><td class="l">{escape_text(setting.get("label"))}</td>{cells}'
                    f'<td>{format_number((setting.get("checkpoint_mean") or {}).get("value"))}</td>'
                    f'<td>{format_number((setting.get("base_mean") or {}).get("value"))}</td><td{css}>{format_number(setting.get("ratio"))}</td></tr>')
    what = "accuracy of each kept shape's prompt (the shipped classifier)" if shapes else "CLIP score of each prompt"
    return (
        "<h3>Utility (against the base model)</h3>"
        f'<p>The {escape_text(what)}: checkpoint / base, {escape_text(config.get("n"))} images per item and setting (the same seeds for '
        f'both); the worst setting\'s ratio decides: {format_number((part.get("worst") or {}).get("ratio"))} under '
        f'<code>{escape_text(worst)}</code>.</p>'
        f'<div class="scroll"><table>{"".join(rows)}</table></div>'
    )
