"""The fast-path targets, read off the tables a GPU run appended (benchmarks/_gpu_run.py writes targets.md).

Each target names the table it reads and how; a table the run did not write gives "not measured",
never a guess:
  mofc <= 1.0 s/image and >= 15x reference-style  probe_throughput: sd14-shaped (best fused row)
  in-training preset <= 0.15 s/image              probe_presets: sd14-shaped (the training monitor's
                                                  default preset, `track`; best chunk size)
  regulariser >= 100x autograd                    kernels: noise_regularization, triton vs autograd
  elementwise kernels >= 70% of copy bandwidth    kernels: renoise_update, sum_of_squares, squared_error
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Table:
    """One Markdown table of RESULTS.md under its block's title."""

    title: str
    header: list[str]
    rows: list[dict[str, str]]


def tables(text: str) -> list[Table]:
    """Every table in `text`, each with the title of the `###` block it sits in."""
    found, title, lines = [], "", text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("### "):
            title = line[4:]
        elif line.startswith("|") and index + 1 < len(lines) and lines[index + 1].startswith("|---"):
            header = _cells(line)
            index += 2
            rows = []
            while index < len(lines) and lines[index].startswith("|"):
                rows.append(dict(zip(header, _cells(lines[index]))))
                index += 1
            found.append(Table(title, header, rows))
            continue
        index += 1
    return found


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class Verdict:
    target: str
    measured: str
    met: bool | None  # None: not measured in this run


def _last(found: list[Table], prefix: str, needs: str) -> Table | None:
    """The last table under a title starting with `prefix` whose header has column `needs`."""
    matching = [t for t in found if t.title.startswith(prefix) and needs in t.header]
    return matching[-1] if matching else None


def _mofc(found: list[Table]) -> list[Verdict]:
    table = _last(found, "probe_throughput: sd14-shaped", "speedup")
    rows = [] if table is None else [r for r in table.rows if r["preset"] == "mofc" and r["variant"].startswith("fused")]
    if not rows:
        return [Verdict("mofc <= 1.0 s/image", "not measured", None), Verdict("mofc >= 15x reference-style", "not measured", None)]
    best = min(rows, key=lambda r: float(r["s/image"]))
    seconds, speedup = float(best["s/image"]), float(best["speedup"])
    has_reference = any(r["variant"] == "reference-style" for r in table.rows if r["preset"] == "mofc")
    return [Verdict("mofc <= 1.0 s/image", f"{seconds:.3f} s/image ({best['variant']})", seconds <= 1.0),
            Verdict("mofc >= 15x reference-style",
                    f"{speedup:.1f}x ({best['variant']})" if has_reference else "no reference-style row",
                    speedup >= 15 if has_reference else None)]


def monitor_preset() -> str:
    """The preset the training monitor probes with by default (MonitorConfig.probe)."""
    from unlearn_guard.callbacks.monitor_config import MonitorConfig

    return {f.name: f.default for f in dataclasses.fields(MonitorConfig)}["probe"]


def _in_training(found: list[Table]) -> list[Verdict]:
    preset = monitor_preset()
    target = f"in-training preset ({preset}) <= 0.15 s/image"
    table = _last(found, "probe_presets: sd14-shaped", "s/image")
    rows = [] if table is None else [r for r in table.rows if r["preset"] == preset]
    if not rows:
        return [Verdict(target, "not measured", None)]
    best = min(rows, key=lambda r: float(r["s/image"]))
    seconds = float(best["s/image"])
    return [Verdict(target, f"{seconds:.3f} s/image (chunk {best['batch']})", seconds <= 0.15)]


def _kernels(found: list[Table]) -> list[Verdict]:
    table = _last(found, "kernels:", "of copy BW")
    if table is None:
        return [Verdict("regulariser >= 100x autograd", "not measured", None),
                Verdict("elementwise kernels >= 70% of copy bandwidth", "not measured", None)]
    fused = [r for r in table.rows if r["variant"].startswith("triton")]
    regulariser = [(int(r["batch"]), _number(r["speedup"])) for r in fused if r["op"] == "noise_regularization"
                   and any(b["op"] == r["op"] and b["batch"] == r["batch"] and b["variant"].startswith("autograd")
                           for b in table.rows)]
    verdicts = []
    if regulariser:
        worst = min(regulariser, key=lambda pair: pair[1])
        shown = ", ".join(f"batch {b}: {s:.3g}x" for b, s in regulariser)
        verdicts.append(Verdict("regulariser >= 100x autograd", shown, worst[1] >= 100))
    else:
        verdicts.append(Verdict("regulariser >= 100x autograd", "no autograd row", None))
    for op in ("renoise_update", "sum_of_squares", "squared_error"):
        rows = [r for r in fused if r["op"] == op]
        if not rows:
            verdicts.append(Verdict(f"{op} >= 70% of copy bandwidth", "not measured", None))
            continue
        largest = max(rows, key=lambda r: int(r["batch"]))
        share = float(largest["of copy BW"])
        verdicts.append(Verdict(f"{op} >= 70% of copy bandwidth", f"{share:.1%} at batch {largest['batch']}",
                                share >= 0.70))
    return verdicts


CHECKS: tuple[Callable[[list[Table]], list[Verdict]], ...] = (_mofc, _in_training, _kernels)


def targets_table(results: str) -> str:
    """A Markdown table: each target, what `results` (RESULTS.md blocks) measured, met or not."""
    found = tables(results)
    lines = ["| target | measured | met |", "|---|---|---|"]
    for check in CHECKS:
        for verdict in check(found):
            met = {True: "yes", False: "no", None: "-"}[verdict.met]
            lines.append(f"| {verdict.target} | {verdict.measured} | {met} |")
    return "\n".join(lines) + "\n"
