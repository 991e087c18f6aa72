"""What every training-loop adapter exposes of its monitor: the signals a loop reads each step.

The accelerate, Lightning and transformers adapters each hold one `ProbeMonitor` and mirror its
decision (`should_stop`, `regularization_weight`) after every probe, the same on every process;
this mixin holds that state once so the three adapters only say how their framework shares it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import InputError
from .monitor import ProbeMonitor, ProbeRecord

if TYPE_CHECKING:
    import torch


class MonitorSignals:
    """The monitor, its mirrored decision and the latest probe's record, for an adapter."""

    monitor: ProbeMonitor
    should_stop: bool
    regularization_weight: float
    last_record: ProbeRecord | None

    @staticmethod
    def check_monitor(monitor: object) -> None:
        if not isinstance(monitor, ProbeMonitor):
            raise InputError(f"monitor: got {type(monitor).__name__}, expected a ProbeMonitor")

    def attach_monitor(self, monitor: ProbeMonitor) -> None:
        """Hold `monitor` and start from its current decision, with no probe recorded yet."""
        self.monitor = monitor
        self.last_record = None
        self.sync_signals()

    def sync_signals(self) -> None:
        """Mirror the monitor's decision (after a probe or a restored state)."""
        self.should_stop = self.monitor.should_stop
        self.regularization_weight = self.monitor.regularization_weight

    @property
    def latest_seeds(self) -> "torch.Tensor | None":
        """The monitor's `latest_seeds` (a copy; None before a probe that kept seeds): what a
        `SeedRecallLoss(seeds=lambda: adapter.latest_seeds)` reads. With `distributed=False` only
        the probing process has them (the term is then 0 elsewhere)."""
        return self.monitor.latest_seeds
