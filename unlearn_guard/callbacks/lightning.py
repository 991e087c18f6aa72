"""`ProbeLightningCallback`: a `ProbeMonitor` inside a Lightning `Trainer`.

    import lightning.pytorch as pl
    from unlearn_guard.callbacks import MonitorConfig, ProbeMonitor
    from unlearn_guard.callbacks.lightning import ProbeLightningCallback

    monitor = ProbeMonitor(DiffusionModel.from_components(unet=module.unet, vae=module.vae, ...),
                           concept, "a parachute", reference=ref, reference_prompts="a photo",
                           config=MonitorConfig(every_n_steps=100, target_d_n=2.0))
    callback = ProbeLightningCallback(monitor)
    trainer = pl.Trainer(max_steps=5000, callbacks=[callback])
    trainer.fit(module)                   # resume: trainer.fit(module, ckpt_path=...) restores history

    # in the LightningModule: loss = esd_loss + callback.regularization_weight * memory_loss

At each `on_train_batch_end` with `trainer.global_step % every_n_steps == 0` (once per step, also
under gradient accumulation) global rank zero probes `module.unet` directly, never the DDP
wrapper; the outcome is broadcast, "probe/d_n" and "probe/regularization_weight" are logged with
`pl_module.log` (so they reach `trainer.callback_metrics` and the loggers), and
`trainer.should_stop` is set once the monitor says stop. The monitor's history and counters are
saved in Lightning checkpoints through `state_dict` / `load_state_dict`. Keep the VAE and the
text encoder inside the LightningModule (frozen) so that Lightning moves them with the UNet;
a probe that finds the parts on different devices is recorded as failed.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from .monitor import ProbeMonitor, ProbeRecord


class ProbeLightningCallback(pl.Callback):
    """Probes every `monitor.config.every_n_steps` optimizer steps; stops training when told.

    Args:
        monitor: a `ProbeMonitor` built on the modules the LightningModule trains.
        prefix: the logged metric names' prefix ("probe/" gives "probe/d_n").
    Attributes:
        regularization_weight / should_stop: the monitor's signals, the same on every rank.
        last_record: the latest probe's record (rank zero; None elsewhere).
    """

    def __init__(self, monitor: ProbeMonitor, prefix: str = "probe/") -> None:
        self.monitor = monitor
        self.prefix = prefix
        self.regularization_weight: float = monitor.regularization_weight
        self.should_stop: bool = monitor.should_stop
        self.last_record: ProbeRecord | None = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step % self.monitor.config.every_n_steps != 0:
            return
        record = self.monitor.maybe_probe(step) if trainer.is_global_zero else None
        d_n = None if record is None or not record.ok else record.d_n
        d_n, self.should_stop, self.regularization_weight = trainer.strategy.broadcast(
            (d_n, self.monitor.should_stop, self.monitor.regularization_weight), src=0
        )
        if record is not None:
            self.last_record = record
        if d_n is not None:
            log = dict(on_step=True, on_epoch=False, batch_size=1)
            pl_module.log(f"{self.prefix}d_n", float(d_n), prog_bar=True, **log)
            pl_module.log(f"{self.prefix}regularization_weight", float(self.regularization_weight), **log)
        if self.should_stop:
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return self.monitor.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.monitor.load_state_dict(state_dict)
        self.regularization_weight = self.monitor.regularization_weight
        self.should_stop = self.monitor.should_stop
