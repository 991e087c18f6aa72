"""Plot the monitor's signal against the training step, ESD alone vs ESD + anchor_path, from the
tables `memory_aware_erasure.py` wrote into RESULTS.md.

Two figures. The first reads the earlier sections, whose monitor decided on the memory loss's own
training pool ("training pool vs step" tables): one panel per concept, one line per run (ESD
alone once per concept), the retrained world's upper end on the same pool (the early-stop
target) dashed. The second (--watch-output) reads the sections whose monitor decided on a watch
set the loss never sees ("Signal vs step" tables): per concept, M on the watch set for ESD alone
and ESD + the loss, M on the loss's own pool (the gap is what the loss fits to its images), the
prompt's accuracy (dotted) and the target. Nothing is recomputed: the plots show the recorded
numbers.

    .venv/bin/python benchmarks/plot_memory_aware_erasure.py   # -> benchmarks/plots/memory_aware_erasure.png
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
CELL = re.compile(r"([0-9.]+) \[([0-9.]+), ([0-9.]+)\]")


def sections(text: str) -> list[tuple[str, str]]:
    """(title, body) of each anchor_path memory_aware_erasure section."""
    parts = re.split(r"^### ", text, flags=re.MULTILINE)
    return [(p.split("\n", 1)[0], p) for p in parts if p.startswith("memory_aware_erasure") and "anchor_path" in p]


def curve_rows(body: str, marker: str = "training pool vs step") -> list[list[str]]:
    if marker not in body:
        return []
    table = body.split(marker, 1)[1]
    rows = [line.strip("|").split("|") for line in table.splitlines() if line.startswith("| ") and "step" not in line]
    return [[c.strip() for c in row] for row in rows]


def recorded_runs(text: str, marker: str) -> list[tuple[str, str, list[list[str]], float | None]]:
    """(concept, "g <guidance>, keep <weight>", table rows, early-stop target) of each section
    whose signal table follows `marker`."""
    runs = []
    for title, body in sections(text):
        rows = curve_rows(body, marker)
        if not rows:
            continue
        concept = rows[0][0]
        guidance = re.search(r"guidance ([0-9.]+)", title)
        keep = re.search(r"keep ([0-9.]+)", title)
        floor = re.search(r"min ([0-9.]+)\)", title)
        label = (f"g {guidance.group(1) if guidance else '0'}, keep {keep.group(1) if keep else '1.0'}"
                 + (f", w_min {floor.group(1)}" if floor else ""))
        target = re.search(rf"early-stop target {concept} ([0-9.]+)", title)
        runs.append((concept, label, rows, float(target.group(1)) if target else None))
    return runs


def parse(cell: str) -> tuple[float, float, float] | None:
    match = CELL.fullmatch(cell)
    return None if match is None else tuple(float(g) for g in match.groups())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--output", type=Path, default=HERE / "plots" / "memory_aware_erasure.png")
    parser.add_argument("--watch-output", type=Path, default=None,
                        help="the watch-set figure (default: beside --output, with _watch in its name)")
    parser.add_argument("--no-record", action="store_true", help="accepted for symmetry: the plot writes no RESULTS row")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs: dict[str, list[tuple[str, list[tuple[int, tuple]], list[tuple[int, tuple]], float | None]]] = {}
    for concept, label, rows, target in recorded_runs(args.results.read_text(), "training pool vs step"):
        plain = [(int(r[1]), parse(r[2])) for r in rows if parse(r[2])]
        memory = [(int(r[1]), parse(r[3])) for r in rows if parse(r[3])]
        runs.setdefault(concept, []).append((f"anchor_path {label}", plain, memory, target))
    if not runs:
        raise SystemExit(f"no anchor_path memory_aware_erasure sections with a signal table in {args.results}")
    concepts = sorted(runs)
    figure, axes = plt.subplots(1, len(concepts), figsize=(5 * len(concepts), 3.8), squeeze=False)
    for axis, concept in zip(axes[0], concepts):
        plain_drawn = False
        for label, plain, memory, target in runs[concept]:
            if not plain_drawn:
                steps = [s for s, _ in plain]
                axis.plot(steps, [v[0] for _, v in plain], color="grey", label="ESD alone")
                axis.fill_between(steps, [v[1] for _, v in plain], [v[2] for _, v in plain], color="grey", alpha=0.15)
                if target is not None:
                    axis.axhline(target, color="black", linestyle="--", linewidth=1,
                                 label="retrained world's upper end (target)")
                plain_drawn = True
            steps = [s for s, _ in memory]
            line, = axis.plot(steps, [v[0] for _, v in memory], marker=".", label=f"ESD + {label}")
            axis.fill_between(steps, [v[1] for _, v in memory], [v[2] for _, v in memory], color=line.get_color(),
                              alpha=0.12)
        axis.set_title(f"{concept}: memory score M on the training pool (track)")
    finish(figure, axes, "M [95% interval]", args.output, {c: len(r) for c, r in runs.items()}, "anchor_path runs")
    watch_output = args.watch_output or args.output.with_name(args.output.stem + "_watch" + args.output.suffix)
    plot_watch_runs(plt, args.results.read_text(), watch_output)


def plot_watch_runs(plt, text: str, output: Path) -> None:
    """The second figure: sections whose monitor decided on a watch set the loss never sees."""
    latest: dict[tuple[str, str, float | None], tuple[str, list[list[str]], float | None]] = {}
    for concept, label, rows, target in recorded_runs(text, "Signal vs step"):
        # a rerun of one setting replaces the earlier one; another seed (other images, so another
        # target) is another run
        latest[concept, label, target] = (f"{label}, target {target:.3f}" if target is not None else label, rows, target)
    runs: dict[str, list[tuple[str, list[list[str]], float | None]]] = {}
    for (concept, _, _), run in latest.items():
        runs.setdefault(concept, []).append(run)
    if not runs:
        print("no watch-set sections yet: no second figure")
        return
    concepts = sorted(runs)
    figure, axes = plt.subplots(1, len(concepts), figsize=(5 * len(concepts), 3.8), squeeze=False)
    for axis, concept in zip(axes[0], concepts):
        for label, rows, target in runs[concept]:
            steps = [int(r[1]) for r in rows]

            def series(column: int) -> list[float]:
                return [parse(r[column])[0] if parse(r[column]) else float(r[column]) if r[column] != "-" else float("nan")
                        for r in rows]

            # each run (a seed: its own images, target and ESD-alone twin) in its own colour
            line, = axis.plot(steps, series(4), marker=".", label=f"ESD + anchor_path ({label}): M watch set")
            color = line.get_color()
            axis.plot(steps, series(5), color=color, alpha=0.5, marker="x", label="  same run: M on the loss's own pool")
            axis.plot(steps, series(6), color=color, linestyle=":", label="  same run: prompt accuracy")
            axis.plot(steps, series(2), color=color, alpha=0.35, linestyle="-.", label="  ESD alone: M watch set")
            if target is not None:
                axis.axhline(target, color=color, linestyle="--", linewidth=1, label="  target (retrained, upper end)")
        axis.set_title(f"{concept}: monitor on images the loss never sees")
    finish(figure, axes, "M (point) / prompt accuracy", output, {c: len(r) for c, r in runs.items()}, "watch-set runs")


def finish(figure, axes, ylabel: str, output: Path, counts: dict[str, int], what: str) -> None:
    """Axis labels and limits, legends, the file, and a table of what was plotted."""
    for axis in axes[0]:
        axis.set_xlabel("ESD step")
        axis.set_ylim(-0.02, 1.02)
        axis.legend(fontsize=5)
    axes[0][0].set_ylabel(ylabel)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)
    print(f"| concept | {what} plotted |\n|---|---|")
    for concept in sorted(counts):
        print(f"| {concept} | {counts[concept]} |")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
