"""Data-parallel work on torch.distributed: shard it, gather the results, notice dead ranks.

`probe`, the gate and `ProbeMonitor` each call this package in one place. Nothing here starts
processes: torchrun, `accelerate launch` or srun start them, `init_process_group` joins them, and
the work runs on whatever default process group is initialised (any backend).

  process_group  the leaf (imports only `errors`): rank, group info, launched?, joining the launcher's group
  timeouts       `Timeouts` and `configure`: how long a rank waits for the others
  failures       `RankFailure`, `LauncherStopped` and the messages that name ranks
  sharding       `shard_bounds`: contiguous, weight-balanced slices of the work
  peers          the other ranks through the store: posting, liveness (pid, heartbeat), waiting
  sessions       `Session`: heartbeats, `gather` with failures shared, `check`; `resolve`, `describe`
  launch         `launched_group`: one command under a launcher, its SIGTERM made `LauncherStopped`
"""

from .failures import LauncherStopped, RankFailure
from .launch import launched_group
from .process_group import group_info, launched, local_device, rank, would_shard
from .sessions import Session, close_session, describe, resolve, session
from .sharding import shard_bounds
from .timeouts import Timeouts, configure

__all__ = [
    "LauncherStopped", "RankFailure", "Session", "Timeouts", "close_session", "configure", "describe", "group_info",
    "launched", "launched_group", "local_device", "rank", "resolve", "session", "shard_bounds", "would_shard",
]
