"""What each of 2 gloo ranks runs for tests/test_distributed.py (started by torch.multiprocessing).

One start-up (imports, process group) serves every scenario, in order; each writes its numbers to
`out/<scenario>.rank<r>.pt` for the test process to compare:
  probe        `probe(distributed=True)` beside a one-process run of the same model on rank 0;
  ddp_monitor  a ProbeMonitor in a plain torch DDP loop, rank 1's share failing at one probe;
  accelerate   an AcceleratorProbe in a 2-process accelerate loop with a tracker;
  stalled      rank 1 stops its heartbeat and stalls inside an operation: rank 0 names it.
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

# The cheapest probe that still runs every stage (as tests/test_callbacks.py's CHEAP).
CHEAP = dict(
    preset="custom",
    n_normal=20,
    bootstrap_samples=20,
    progress=False,
    memory_typical_sigmas=1e6,  # the random tiny model's seeds are atypical (see tests/test_callbacks.py's CHEAP)
)
CHEAP_INVERSION = dict(num_steps=4, renoise_steps=1, early_window=(0, 2), late_window=(0, 2))


def cheap_config():
    from unlearn_guard.config import InversionConfig, ProbeConfig

    return ProbeConfig(inversion=InversionConfig(**CHEAP_INVERSION), **CHEAP)


def smooth_images(count: int, seed: int = 1234) -> torch.Tensor:
    """(count, 3, 64, 64) in [0, 1] with smooth structure, as conftest's tiny_images."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 8, 8, generator=g)
    return F.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False).clamp(0, 1)


def denoising_loss(unet, embeddings, latents, noise):
    t = torch.full((latents.shape[0],), 500, dtype=torch.long)
    pred = unet(latents + noise, t, encoder_hidden_states=embeddings.expand(latents.shape[0], -1, -1)).sample
    return F.mse_loss(pred, noise)


def history_of(monitor) -> list[dict]:
    """The records without `seconds` (each rank's own wall time)."""
    return [{k: v for k, v in record.to_dict().items() if k != "seconds"} for record in monitor.history]


# --------------------------------------------------------------------------- scenarios
def scenario_probe(rank: int, out: Path) -> dict:
    from unlearn_guard.models import DiffusionModel
    from unlearn_guard.models.tiny import build_tiny_components
    from unlearn_guard.probe import probe

    model = DiffusionModel.from_components(**build_tiny_components(seed=0))
    images = smooth_images(9)
    concept, reference = images[:5], images[5:]  # 5 = chunks of 2, 2 and 1: a partial chunk too
    kwargs = dict(reference=reference, reference_prompts="a blue square", config=cheap_config(), batch_size=2,
                  keep_seeds=True, keep_reconstructions=True)
    shared = probe(model, concept, "a red circle", distributed=True, **kwargs)
    shared.to_json(out / f"probe_result.rank{rank}.json")
    found = {"dict": shared.to_dict(), "shared": _tensors(shared)}
    if rank == 0:
        alone = probe(model, concept, "a red circle", **kwargs)
        found["alone"] = _tensors(alone)
        found["alone_provenance"] = alone.provenance["distributed"]
        # Negative control: other chunks (batch 1) move the numbers, so equality above is no accident.
        found["batch_one"] = _tensors(probe(model, concept, "a red circle", **{**kwargs, "batch_size": 1}))
    auto = probe(model, concept, "a red circle", distributed=True, **{**kwargs, "batch_size": None})
    found["auto"] = _tensors(auto)
    if rank == 0:
        found["auto_alone"] = _tensors(probe(model, concept, "a red circle", **{**kwargs, "batch_size": None}))
    return found


def _tensors(result) -> dict:
    return {
        "erased_nll": result.erased.nll, "erased_psnr": result.erased.psnr,
        "reference_nll": result.reference.nll, "reference_psnr": result.reference.psnr,
        "erased_seeds": result.erased.seeds, "reference_seeds": result.reference.seeds,
        "erased_reconstructions": result.erased.reconstructions,
        "d_n": result.memory_distance.to_dict(), "memory": None if result.memory is None else result.memory.to_dict(),
        "evaluations": (result.erased.unet_evaluations, result.reference.unet_evaluations),
        "normal": result.normal_nll, "notes": result.notes,
    }


def scenario_ddp_monitor(rank: int, out: Path) -> dict:
    from torch.nn.parallel import DistributedDataParallel

    import importlib

    from unlearn_guard.callbacks import MonitorConfig, ProbeMonitor
    from unlearn_guard.models import DiffusionModel
    from unlearn_guard.models.tiny import build_tiny_components

    probe_module = importlib.import_module("unlearn_guard.probe")  # the module (the package exports the function)
    components = build_tiny_components(seed=0)
    unet = components.pop("unet")
    ddp = DistributedDataParallel(unet)
    model = DiffusionModel.from_components(unet=unet, **components)  # the module DDP trains, unwrapped
    images = smooth_images(8, seed=7)
    # Stops at the third successful probe: nothing beats the first by 1e9 (patience 1).
    monitor = ProbeMonitor(model, images[:4], "a red circle", reference=images[4:], reference_prompts="a blue square",
                           config=MonitorConfig(every_n_steps=2, probe=cheap_config().replace(batch_size=2),
                                                signal="d_n", patience=1, min_delta=1e9))
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
    embeddings = model.encode_prompts(["a red circle"])
    generator = torch.Generator().manual_seed(100 + rank)  # each rank its own batch, as DDP training has
    run_unit = probe_module.run_unit
    steps, alone_d_n = [], None

    def failing(*args, **kwargs):
        raise RuntimeError("out of memory (injected on rank 1)")

    for step in range(1, 11):
        latents, noise = torch.randn(2, 4, 8, 8, generator=generator), torch.randn(2, 4, 8, 8, generator=generator)
        loss = denoising_loss(ddp, embeddings, latents, noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if rank == 1 and step == 4:
            probe_module.run_unit = failing
        try:
            stop = monitor.step(step)
        finally:
            probe_module.run_unit = run_unit
        if step == 2 and rank == 0:  # the shared probe equals one process probing the same weights
            alone_d_n = probe_module.probe(model, monitor.images, reference=monitor.reference,
                                           config=monitor.config.probe).d_n
        steps.append((step, stop, monitor.regularization_weight))
        if stop:
            break
    checksum = sum(float(p.double().sum()) for p in unet.parameters())
    return {"history": history_of(monitor), "steps": steps, "stop_reason": monitor.stop_reason,
            "failures": monitor.failures, "alone_d_n": alone_d_n, "checksum": checksum, "shards": monitor.shards}


def scenario_accelerate(rank: int, out: Path) -> dict:
    from accelerate import Accelerator
    from accelerate.tracking import GeneralTracker

    from unlearn_guard.callbacks import MonitorConfig, ProbeMonitor
    from unlearn_guard.callbacks.loop import AcceleratorProbe
    from unlearn_guard.models import DiffusionModel
    from unlearn_guard.models.tiny import build_tiny_components

    class Recording(GeneralTracker):
        name = "recording"
        requires_logging_directory = False

        def __init__(self) -> None:
            super().__init__()
            self.logged: list = []

        @property
        def tracker(self):
            return self.logged

        def store_init_configuration(self, values: dict) -> None:
            pass

        def log(self, values: dict, step: int | None = None, **kwargs) -> None:
            self.logged.append((step, dict(values)))

    tracker = Recording()
    accelerator = Accelerator(cpu=True, log_with=[tracker])
    accelerator.init_trackers("erase")
    components = build_tiny_components(seed=0)
    unet = components.pop("unet")
    unet, optimizer = accelerator.prepare(unet, torch.optim.SGD(unet.parameters(), lr=0.1))
    model = DiffusionModel.from_components(unet=unet, **components)
    images = smooth_images(8, seed=11)
    probing = AcceleratorProbe(
        ProbeMonitor(model, images[:4], "a red circle", reference=images[4:], reference_prompts="a blue square",
                     config=MonitorConfig(every_n_steps=2, probe=cheap_config().replace(batch_size=2), signal="d_n",
                                          patience=1, min_delta=1e9), name="circle"),
        accelerator)
    embeddings = model.encode_prompts(["a red circle"])
    generator = torch.Generator().manual_seed(200 + rank)
    steps = []
    for step in range(1, 9):
        latents, noise = torch.randn(2, 4, 8, 8, generator=generator), torch.randn(2, 4, 8, 8, generator=generator)
        accelerator.backward(denoising_loss(unet, embeddings, latents, noise))
        optimizer.step()
        optimizer.zero_grad()
        stop = probing.step(step)
        steps.append((step, stop, probing.regularization_weight))
        if stop:
            break
    # No end_training(): it would destroy the process group the next scenario runs on.
    return {"history": history_of(probing.monitor), "steps": steps, "num_processes": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type), "logged": [(s, sorted(v)) for s, v in tracker.logged],
            "last_record_step": None if probing.last_record is None else probing.last_record.step}


def scenario_stalled(rank: int, out: Path) -> dict:
    from unlearn_guard import distributed as distributed_work

    group = distributed_work.session()
    if rank == 1:
        group._stop.set()  # the heartbeat stops, as when a node loses its network or the process hangs
        time.sleep(30)  # the test kills this rank once rank 0 has answered
        return {}
    started = time.monotonic()
    try:
        group.gather(lambda: 1, "the stalled operation")
    except distributed_work.RankFailure as error:
        return {"error": str(error), "ranks": list(error.ranks), "seconds": time.monotonic() - started,
                "exit_code": error.exit_code}
    return {"error": None}


SCENARIOS = {"probe": scenario_probe, "ddp_monitor": scenario_ddp_monitor, "accelerate": scenario_accelerate,
             "stalled": scenario_stalled}


def run(rank: int, world_size: int, port: int, out: str, scenarios: list[str]) -> None:
    """Entry point for torch.multiprocessing.start_processes (rank first)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world_size), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    from unlearn_guard import distributed as distributed_work

    distributed_work.configure(heartbeat_s=0.25, dead_after_s=3.0, start_within_s=120.0)
    dist.init_process_group("gloo")
    folder = Path(out)
    for name in scenarios:
        try:
            found = SCENARIOS[name](rank, folder)
        except Exception:  # noqa: BLE001 - the test reads the traceback
            found = {"exception": traceback.format_exc()}
        torch.save(found, folder / f"{name}.rank{rank}.pt")
        (folder / f"{name}.rank{rank}.done").write_text("")
