"""Data-parallel probe throughput: 1 vs N processes (torch.distributed), with the parallel efficiency.

For each world size W the script starts W processes the way srun does (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT in each one's environment), each with `--threads` torch
threads and, on CUDA, its own GPU (cuda:LOCAL_RANK). Every rank builds the model, warms up on one
image alone, waits for the others, then runs one timed `probe(..., distributed=W > 1)` of the same
E and R sets (the gather and the d_N / memory bootstrap included; start-up and model loading not).
Reports per W: wall seconds (median of --repeats), images/s, speedup over W=1, parallel efficiency
(speedup / W), the compute seconds per image (summed over every rank's units: when it grows with W,
the processes are slowing each other down, e.g. by sharing cores), the seconds spent outside the
slowest rank's share (waiting, moving the results, d_N and the memory score: the cost of going
parallel), and that every W returned the W=1 numbers (max |NLL difference|, d_N and memory score
equal). The machine's load average before and after is printed with the table: on a shared
machine the efficiency says as much about the other jobs as about the code.

    .venv/bin/python benchmarks/distributed_scaling.py --world-sizes 1,2 --images 16 --threads 1     # CPU
    .venv/bin/python benchmarks/distributed_scaling.py --device cuda --dtype bfloat16 --model sd14-shaped \\
        --images 64 --world-sizes auto                                                             # N GPUs
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from _results import append_results, markdown_table


def worker(args: argparse.Namespace) -> None:
    """One rank: build, warm up, synchronise, time one probe, write rank 0's numbers to --out."""
    import torch.distributed as dist

    from unlearn_guard import DiffusionModel, ProbeConfig, probe
    from unlearn_guard import distributed as distributed_work
    from unlearn_guard.models.tiny import build_sd14_shaped_components
    from unlearn_guard.world import load_world_model
    from unlearn_guard.world.evaluate import probe_sets

    torch.set_num_threads(args.threads)
    world_size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    device = torch.device(f"cuda:{os.environ['LOCAL_RANK']}") if args.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if args.model == "world":
        model = load_world_model()
    else:
        model = DiffusionModel.from_components(**build_sd14_shaped_components(seed=0), source=args.model)
    if device.type == "cuda":
        model.to(device=device)
    if args.dtype != "float32":  # the VAE stays fp32, as probe_throughput.py does
        model.unet.to(getattr(torch, args.dtype))
        model.text_encoder.to(getattr(torch, args.dtype))
    sets = probe_sets("circle", args.images, 0)
    side = model.resolution
    resize = lambda x: torch.nn.functional.interpolate(x.float() / 255, size=side, mode="bilinear")  # noqa: E731
    concept, reference = resize(sets.concept), resize(sets.reference)
    config = ProbeConfig.from_preset(args.preset, progress=False, batch_size=args.batch_size)
    probe(model, concept[:2], sets.concept_prompts[:2], config=config)  # warm-up, alone: allocator, kernels
    group = None
    if world_size > 1:
        dist.init_process_group("gloo")
        group = distributed_work.session()
    times, outside, compute, result = [], [], [], None
    for _ in range(args.repeats):
        if group is not None:
            group.gather(lambda: None, "the start line")  # every rank loaded and warmed up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        result = probe(model, concept, sets.concept_prompts, reference=reference,
                       reference_prompts=sets.reference_prompts, config=config, distributed=world_size > 1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
        share = (result.provenance.get("distributed") or {}).get("wall_seconds")
        outside.append(0.0 if share is None else times[-1] - share)
        compute.append(result.erased.seconds + result.reference.seconds)
    if rank == 0:
        Path(args.out).write_text(json.dumps({
            "seconds": times, "images": len(result.erased.images) + len(result.reference.images),
            "nll": result.erased.nll.tolist() + result.reference.nll.tolist(),
            "d_n": result.d_n, "memory": result.memory_value,
            "units": (result.provenance.get("distributed") or {}).get("units"),
            # compute seconds summed over units (all ranks); wall time outside the slowest rank's share
            "compute_seconds": compute, "outside_seconds": outside,
        }))
    if group is not None:
        distributed_work.close_session(wait_s=30.0)
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(world_size: int, args: argparse.Namespace, folder: Path) -> dict:
    out = folder / f"w{world_size}.json"
    port = free_port()
    command = [sys.executable, __file__, "--worker", "--out", str(out)] + [
        f"--{k.replace('_', '-')}={v}" for k, v in (
            ("model", args.model), ("images", args.images), ("preset", args.preset), ("device", args.device),
            ("dtype", args.dtype), ("threads", args.threads), ("repeats", args.repeats)) ] + (
        [f"--batch-size={args.batch_size}"] if args.batch_size else [])
    procs = []
    for rank in range(world_size):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
               "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "OMP_NUM_THREADS": str(args.threads)}
        procs.append(subprocess.Popen(command, env=env))
    codes = [proc.wait(timeout=args.timeout) for proc in procs]
    if any(codes):
        raise SystemExit(f"world size {world_size}: ranks exited with {codes}")
    return json.loads(out.read_text())


def build_parser() -> argparse.ArgumentParser:
    """The command line (benchmarks/_gpu_run.py checks its steps' flags against it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["world", "sd14-shaped"], default="world")
    parser.add_argument("--images", type=int, default=16, help="images per set (E and R each)")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--batch-size", type=int, default=None, help="chunk size (default: automatic, 4 on CPU)")
    parser.add_argument("--world-sizes", default="1,2", help="comma list, or 'auto' (1, 2, 4, ... up to the GPUs)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--repeats", type=int, default=1, help="timed probes per world size (median reported)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per world size before giving up")
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.worker:
        worker(args)
        return
    if args.world_sizes == "auto":
        available = torch.cuda.device_count() if args.device == "cuda" else (os.cpu_count() or 1)
        sizes = [w for w in (1, 2, 4, 8, 16, 32, 64) if w <= max(available, 1)]
    else:
        sizes = [int(w) for w in args.world_sizes.split(",")]
    if args.device == "cuda" and max(sizes) > torch.cuda.device_count():
        raise SystemExit(f"--world-sizes {args.world_sizes}: this machine has {torch.cuda.device_count()} GPU(s)")
    load_before = os.getloadavg()
    found = {}
    with tempfile.TemporaryDirectory() as folder:
        for world_size in sizes:
            found[world_size] = launch(world_size, args, Path(folder))
    load_after = os.getloadavg()
    base = found[sizes[0]]
    one = statistics.median(found[1]["seconds"]) if 1 in found else None  # speedups need the 1-process time
    rows = []
    for world_size in sizes:
        run = found[world_size]
        seconds = statistics.median(run["seconds"])
        speedup = None if one is None else one / seconds
        nll_diff = max(abs(a - b) for a, b in zip(run["nll"], base["nll"]))
        same = "yes" if run["d_n"] == base["d_n"] and run["memory"] == base["memory"] else "NO"
        rows.append([world_size, run["images"], run["units"] or "-", seconds, run["images"] / seconds,
                     "-" if speedup is None else speedup, "-" if speedup is None else speedup / world_size,
                     statistics.median(run["compute_seconds"]) / run["images"], statistics.median(run["outside_seconds"]),
                     f"{nll_diff:.1e}", same])
    header = ["processes", "images (E+R)", "units", "wall s (median)", "images/s", "speedup", "parallel efficiency",
              "compute s/image", "gather + assembly s", f"max abs NLL diff vs {sizes[0]}", "d_N and M equal"]
    table = markdown_table(header, rows)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    note = (f"{args.model}, preset {args.preset}, {args.device} {args.dtype}, {args.threads} thread(s) per process, "
            f"{args.repeats} timed probe(s) per size, {cores} usable cores; load average (1/5/15 min) before "
            f"{load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, after "
            f"{load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}")
    print(table)
    print(note)
    if not args.no_record:
        device = torch.device("cuda") if args.device == "cuda" else torch.device("cpu")
        append_results(f"distributed_scaling: probe on 1 vs {max(sizes)} processes ({args.device})",
                       f"{table}\n\n{note}", device)


if __name__ == "__main__":
    main()
