"""How many images make the monitor's decision meaningful: width of the d_N interval vs set size.

The monitor decides on the interval's conservative end (`unlearn_guard.callbacks.monitor`), so a
target or an improvement can only be seen once it is larger than the interval's width. This
probes the shipped world model (not erased: it still remembers every shape) with the `fast`
preset, the monitor's default, for E = R = 4, 8 and 16 images, on several independent image
sets per size, and reports per size: the mean 95% interval width, the spread of the point
estimate across image sets, and the seconds per probe. Appends the table to RESULTS.md.

    .venv/bin/python benchmarks/decision_interval.py --threads 1 --sets 5
    .venv/bin/python benchmarks/decision_interval.py --threads 1 --sets 5 --n-normal 200
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from unlearn_guard import ProbeConfig, probe
from unlearn_guard.world import load_world_model, probe_sets

from _results import append_results, markdown_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concept", default="circle")
    parser.add_argument("--sizes", default="4,8,16", help="images per set (E and R each)")
    parser.add_argument("--sets", type=int, default=3, help="independent image sets per size")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--n-normal", type=int, default=None, help="size of the N set (default: the preset's, 50)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (1 when the machine is shared)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_world_model()
    config = ProbeConfig.from_preset(args.preset, seed=0, progress=False)
    if args.n_normal is not None:
        config = config.replace(n_normal=args.n_normal)
    rows, summary = [], []
    for size in (int(s) for s in args.sizes.split(",")):
        widths, values, seconds = [], [], []
        for index in range(args.sets):
            sets = probe_sets(args.concept, size, seed=10_000 + 1_000 * index)
            started = time.perf_counter()
            md = probe(model, sets.concept, sets.concept_prompts, reference=sets.reference,
                       reference_prompts=sets.reference_prompts, config=config).memory_distance
            seconds.append(time.perf_counter() - started)
            widths.append(md.ci_high - md.ci_low)
            values.append(md.value)
            rows.append((size, index, md.value, md.ci_low, md.ci_high, md.ci_high - md.ci_low, seconds[-1]))
        summary.append((f"{size} + {size}", statistics.mean(widths), min(widths), max(widths),
                        statistics.stdev(values) if len(values) > 1 else float("nan"), statistics.mean(seconds)))

    per_set = markdown_table(("images per set", "image set", "d_N", "ci_low", "ci_high", "width", "probe s"), rows)
    table = markdown_table(("E + R", "mean 95% width", "min width", "max width", "sd of d_N across sets",
                            "s per probe"), summary)
    body = (f"shipped world model (not erased), concept '{args.concept}', preset {args.preset}, "
            f"N set {config.n_normal}, {args.sets} image sets per size\n\n{table}\n\n{per_set}")
    print(body)
    if not args.no_record:
        append_results(f"decision_interval: d_N interval width vs images per set ({args.preset}, N set "
                       f"{config.n_normal})", body)


if __name__ == "__main__":
    main()
