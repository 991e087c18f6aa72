"""The process group this process belongs to, and whether a launcher started it.

The leaf of `unlearn_guard.distributed`: it imports nothing of ours but `errors`, so `results`
and `probe` can ask for the rank without depending on sessions, heartbeats or sharding. Nothing
here starts processes: torchrun, `accelerate launch` or srun start them.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from ..errors import InputError


def initialized() -> bool:
    """Whether a default torch.distributed process group is initialised (any backend)."""
    return dist.is_available() and dist.is_initialized()


def group_info() -> dict[str, Any] | None:
    """World size and backend of the initialised default process group, or None."""
    if not initialized():
        return None
    return {"world_size": dist.get_world_size(), "backend": str(dist.get_backend())}


def rank() -> int:
    """This process's rank in the default group (0 without one)."""
    return dist.get_rank() if initialized() else 0


def would_shard(distributed: bool | None) -> bool:
    """Whether `resolve(distributed)` would shard now: not False, and a group of 2+ ranks (no collective)."""
    if distributed is False or not initialized():
        return False
    return dist.get_world_size() > 1


def launched() -> bool:
    """True when a launcher (torchrun, accelerate launch, a SLURM wrapper) started this process as
    one of several ranks: WORLD_SIZE > 1 in the environment."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        raise InputError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} in the environment; expected an int") from None


def local_device(device: str | None) -> str | None:
    """`cuda` means this rank's GPU (cuda:LOCAL_RANK) when launched; anything else is kept."""
    if device == "cuda" and launched():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def join_launcher_group(device: str | None, timeout_s: float) -> bool:
    """Join the launcher's process group (env://, gloo) unless one is initialised; True when joined here.

    Gloo: every payload moves as CPU objects, and the GPUs (cuda:LOCAL_RANK when `device` is cuda)
    only compute. `timeout_s` bounds the group's collectives. Pair with `leave_launcher_group`.
    """
    if dist.is_initialized():
        return False
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise InputError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: launch with "
                         "torchrun or accelerate launch, or set RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT")
    if device is not None and device.startswith("cuda"):
        torch.cuda.set_device(torch.device(local_device(device)))
    dist.init_process_group("gloo", timeout=timedelta(seconds=timeout_s))
    return True


def leave_launcher_group(joined: bool) -> None:
    """Destroy the default group when `join_launcher_group` created it (`joined`); a caller's group is kept."""
    if joined and dist.is_initialized():
        dist.destroy_process_group()
