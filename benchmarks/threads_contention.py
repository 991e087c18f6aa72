"""ESD-LoRA step time with 1 or 2 torch threads, alone and beside another torch job on the same CPU.

On a 2-core machine shared with one more torch process, the main job's ESD steps went from about
0.5 s to 8-11 s (issue 13): both processes' OpenMP threads wait for each other on cores the other
holds. This measures, for each setting, seconds per ESD step of the demo's own settings (shapes
world, ESD-x LoRA, lr 1e-3, seed 0): median, 90th percentile, max and the number of steps slower
than 5x the median (the demo's hint threshold). Each setting runs in a fresh process; the
competitor is another process doing float32 matmuls with torch's default thread count, as a second
training job would. The load average before each run is recorded: other jobs on a shared machine
are part of the measurement.

    .venv/bin/python benchmarks/threads_contention.py --steps 30
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from _results import append_results, markdown_table

SETTINGS = [  # (name, torch threads, competitor running, extra environment)
    ("alone, 1 thread", 1, False, {}),
    ("alone, 2 threads", 2, False, {}),
    ("with competitor, 1 thread", 1, True, {}),
    ("with competitor, 2 threads", 2, True, {}),
    ("with competitor, 2 threads, OMP_WAIT_POLICY=PASSIVE", 2, True, {"OMP_WAIT_POLICY": "PASSIVE"}),
]


def child(threads: int, steps: int) -> None:
    """Run `steps` ESD steps and print their durations as JSON (one process per setting)."""
    from unlearn_guard.trainers import ESDConfig, esd_lora_erase
    from unlearn_guard.world import load_world_model

    torch.set_num_threads(threads)
    model = load_world_model()
    durations: list[float] = []
    mark = [time.perf_counter()]

    def on_step(iteration: int, loss: float) -> None:
        now = time.perf_counter()
        durations.append(now - mark[0])
        mark[0] = now

    esd_lora_erase(model, ESDConfig(concept="a circle", method="esd-x", iterations=steps, lr=1e-3, seed=0),
                   on_step=on_step, progress=False)
    print(json.dumps(durations[1:]))  # the first step also pays for set-up


def competitor() -> None:
    """Another torch job: matmuls with torch's default threads, until killed."""
    a = torch.randn(768, 768)
    while True:
        a = torch.tanh(a @ a.T / 768)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--settings", default=",".join(str(i) for i in range(len(SETTINGS))),
                        help="which settings to run, by index: " + "; ".join(f"{i} {s[0]}" for i, s in enumerate(SETTINGS)))
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--child", type=int, metavar="THREADS", help=argparse.SUPPRESS)
    parser.add_argument("--competitor", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.competitor:
        return competitor()
    if args.child is not None:
        return child(args.child, args.steps)

    rows = []
    for name, threads, compete, extra in [SETTINGS[int(i)] for i in args.settings.split(",")]:
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
        rival = None
        if compete:
            rival = subprocess.Popen([sys.executable, __file__, "--competitor"], env=env)
            time.sleep(3)  # its imports done, its matmuls running
        load = os.getloadavg()[0]
        started = time.perf_counter()
        try:
            done = subprocess.run([sys.executable, __file__, "--child", str(threads), "--steps", str(args.steps)],
                                  env={**env, **extra}, capture_output=True, text=True, check=True)
        finally:
            if rival is not None:
                rival.kill()
                rival.wait()
        wall = time.perf_counter() - started
        durations = json.loads(done.stdout.strip().splitlines()[-1])
        median = statistics.median(durations)
        p90 = sorted(durations)[int(0.9 * (len(durations) - 1))]
        slow = sum(d >= 5 * median for d in durations)
        rows.append((name, threads, f"{load:.1f}", len(durations), median, p90, max(durations), sum(durations), slow,
                     wall))
        print(f"{name}: median {median:.3f} s, p90 {p90:.3f} s, max {max(durations):.3f} s", flush=True)

    table = markdown_table(["setting", "threads", "load avg before", "steps", "median s/step", "p90 s/step",
                            "max s/step", "sum s", "steps >= 5x median", "process wall s (incl. start-up)"], rows)
    print(table)
    if not args.no_record:
        append_results(f"threads_contention: ESD-x LoRA steps, {args.steps} steps, {os.cpu_count()} CPUs", table)


if __name__ == "__main__":
    main()
