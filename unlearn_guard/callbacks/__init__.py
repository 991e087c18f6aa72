"""Probe the model while it trains: a framework-agnostic monitor and thin adapters.

The core needs only torch, one module per job: `monitor` (`ProbeMonitor`), `monitor_config`
(`MonitorConfig`), `records` (`ProbeRecord`, saved states), `decision` (`Signal` / `decisive_value`,
what every decision reads, the stop rule and the loss weight), `image_sets` (the sets a monitor
probes), `prompt_check` (`PromptCheck`) and `warnings` (`ProbeWarning`). The adapters import
their framework and live in their own modules, imported on demand:
  - `unlearn_guard.callbacks.loop.AcceleratorProbe`: a hand-written (accelerate) loop;
  - `unlearn_guard.callbacks.transformers.ProbeTrainerCallback`: `transformers.Trainer`;
  - `unlearn_guard.callbacks.lightning.ProbeLightningCallback`: `lightning.pytorch.Trainer`.
"""

from .decision import Signal, decisive_value
from .monitor import ProbeMonitor, default_probe_fn
from .monitor_config import MonitorConfig
from .prompt_check import PromptCheck
from .records import ProbeRecord
from .warnings import ProbeWarning

__all__ = ["MonitorConfig", "ProbeMonitor", "ProbeRecord", "ProbeWarning", "PromptCheck", "Signal",
           "decisive_value", "default_probe_fn"]
