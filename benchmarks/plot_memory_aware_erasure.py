"""Plot the memory score on the monitor's training pool against the training step, ESD alone vs
ESD + anchor_path, from the tables `memory_aware_erasure.py` wrote into RESULTS.md.

Reads every `### memory_aware_erasure` section whose loss is anchor_path, takes its
"signal vs step" table (value [95% interval]) and draws one panel per concept, one line per run
(ESD alone once per concept), the retrained world's upper end on the same pool (the early-stop
target) as a dashed line. Nothing is recomputed: the plot shows the recorded numbers.

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


def curve_rows(body: str) -> list[list[str]]:
    table = body.split("training pool vs step", 1)[1]
    rows = [line.strip("|").split("|") for line in table.splitlines() if line.startswith("| ") and "step" not in line]
    return [[c.strip() for c in row] for row in rows]


def parse(cell: str) -> tuple[float, float, float] | None:
    match = CELL.fullmatch(cell)
    return None if match is None else tuple(float(g) for g in match.groups())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--output", type=Path, default=HERE / "plots" / "memory_aware_erasure.png")
    parser.add_argument("--no-record", action="store_true", help="accepted for symmetry: the plot writes no RESULTS row")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs: dict[str, list[tuple[str, list[tuple[int, tuple]], list[tuple[int, tuple]], float | None]]] = {}
    for title, body in sections(args.results.read_text()):
        rows = curve_rows(body)
        if not rows:
            continue
        concept = rows[0][0]
        guidance = re.search(r"guidance ([0-9.]+)", title)
        keep = re.search(r"keep ([0-9.]+)", title)
        label = f"anchor_path g {guidance.group(1) if guidance else '0'}, keep {keep.group(1) if keep else '1.0'}"
        target = re.search(rf"early-stop target {concept} ([0-9.]+)", title)
        plain = [(int(r[1]), parse(r[2])) for r in rows if parse(r[2])]
        memory = [(int(r[1]), parse(r[3])) for r in rows if parse(r[3])]
        runs.setdefault(concept, []).append((label, plain, memory, float(target.group(1)) if target else None))
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
        axis.set_xlabel("ESD step")
        axis.set_ylim(-0.02, 1.02)
        axis.legend(fontsize=7)
    axes[0][0].set_ylabel("M [95% interval]")
    figure.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.output, dpi=110)
    print("| concept | anchor_path runs plotted |\n|---|---|")
    for concept in concepts:
        print(f"| {concept} | {len(runs[concept])} |")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
