"""Probe the model while it trains: a framework-agnostic monitor and thin adapters.

The core (`ProbeMonitor`, `MonitorConfig`, `ProbeRecord`, `PromptCheck`, and `Signal` / `decisive_value`, what
every decision reads) needs only torch. The adapters import
their framework and live in their own modules, imported on demand:
  - `unlearn_guard.callbacks.loop.AcceleratorProbe`: a hand-written (accelerate) loop;
  - `unlearn_guard.callbacks.transformers.ProbeTrainerCallback`: `transformers.Trainer`;
  - `unlearn_guard.callbacks.lightning.ProbeLightningCallback`: `lightning.pytorch.Trainer`.
"""

from .monitor import (
    MonitorConfig,
    ProbeMonitor,
    ProbeRecord,
    ProbeWarning,
    Signal,
    decisive_value,
    default_probe_fn,
)
from .prompt_check import PromptCheck

__all__ = ["MonitorConfig", "ProbeMonitor", "ProbeRecord", "ProbeWarning", "PromptCheck", "Signal",
           "decisive_value", "default_probe_fn"]
