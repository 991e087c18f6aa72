"""`ProbeLightningCallback`: a `ProbeMonitor` inside a Lightning `Trainer`.

    from unlearn_guard.callbacks.lightning import ProbeLightningCallback

    trainer = pl.Trainer(max_steps=5000, callbacks=[ProbeLightningCallback(monitor)])
    trainer.fit(module)                   # resume: trainer.fit(module, ckpt_path=...) restores the monitor

    # in the LightningModule: loss = esd_loss + callback.regularization_weight * memory_loss

At each `on_train_batch_end` with `trainer.global_step % every_n_steps == 0` (once per step, also
under gradient accumulation) `module.unet` is probed directly, never the DDP wrapper: by every
rank, each on its share of the images, with the same outcome everywhere (in a multi-rank run,
`ProbeMonitor(distributed=None)`, the default), or by global rank zero alone with the outcome
broadcast (`distributed=False`). Then:
  - every probe reaches every logger of `trainer.loggers` at its own step (`global_step`, the
    step the monitor records), whatever `log_every_n_steps` is: keys `monitor.metrics(record)`,
    "<name>/d_n", "<name>/ci_low", "<name>/ci_high", "<name>/regularization_weight",
    "<name>/failed", "<name>/failures", ... (name "probe" by default);
  - the same values go to `pl_module.log(..., logger=False)`, so `trainer.callback_metrics`
    (ModelCheckpoint, EarlyStopping) and the progress bar ("<name>/d_n") have them;
  - `trainer.should_stop` is set once the monitor says stop.
The monitor is checked again at `on_train_start`, after Lightning moved the module: keep the VAE
and the text encoder inside the LightningModule (frozen) so they move with the UNet.

The monitor's history and counters are saved in Lightning checkpoints under a `state_key` that
holds the monitor's name, so two callbacks (two concepts, two presets) can run in one `fit` as
long as their monitors have different names.

A memory loss in the LightningModule (`unlearn_guard.losses`; gradients reach only the
trainable adapter), weighted by the monitor; the callback stops `fit` on the calibrated memory
score's target (`MonitorConfig(signal="memory", target=...)`):

    from unlearn_guard.losses import InversionLikelihoodConfig, InversionLikelihoodLoss, concept_latents

    def training_step(self, batch, batch_idx):
        if self.memory is None:                          # built once, on the module's device
            images = self.probe_callback.monitor.loss_images  # ProbeMonitor(..., loss_images=...), else its images
            self.memory = InversionLikelihoodLoss(
                self.probe_callback.monitor.model, concept_latents(self.probe_callback.monitor.model, images.pixels),
                self.probe_callback.monitor.model.encode_prompts(images.prompts), InversionLikelihoodConfig(steps=10))
        return self.esd_loss(batch) + self.probe_callback.regularization_weight * self.memory()
(`SeedRecallLoss(..., seeds=lambda: callback.latest_seeds)` and `AnchorPathLoss(..., seeds=lambda:
callback.latest_seeds, reference_latents=..., reference_embeddings=...)` read the probe's seeds
instead, with keep_seeds=True in the probe config; what each loss did is measured in
benchmarks/RESULTS.md, memory_aware_erasure.)
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from .monitor import ProbeMonitor
from .signals import MonitorSignals


class ProbeLightningCallback(MonitorSignals, pl.Callback):
    """Probes every `monitor.config.every_n_steps` optimizer steps; stops training when told.

    Args:
        monitor: a `ProbeMonitor` built on the modules the LightningModule trains; its `name`
            keys the logged metrics and the checkpointed state.
    Attributes:
        regularization_weight / should_stop: the monitor's signals, the same on every rank.
        last_record: the latest probe's record (every rank when probes are shared; else rank zero,
            None elsewhere).
    """

    def __init__(self, monitor: ProbeMonitor) -> None:
        self.check_monitor(monitor)
        self.attach_monitor(monitor)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(name=self.monitor.name)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.monitor.check()  # the module is on its device now: parts together, backend usable

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step % self.monitor.config.every_n_steps != 0:
            return
        if self.monitor.shards:  # every rank probes its share; the outcome is the same everywhere
            record = self.monitor.maybe_probe(step)
            metrics = None if record is None else self.monitor.metrics(record)
            self.should_stop, self.regularization_weight = self.monitor.should_stop, self.monitor.regularization_weight
        else:
            record = self.monitor.maybe_probe(step) if trainer.is_global_zero else None
            metrics = None if record is None else self.monitor.metrics(record)
            metrics, self.should_stop, self.regularization_weight = trainer.strategy.broadcast(
                (metrics, self.monitor.should_stop, self.monitor.regularization_weight), src=0
            )
        if record is not None:
            self.last_record = record
        if metrics:
            if trainer.is_global_zero:
                for logger in trainer.loggers:  # at the probe's own step, not at log_every_n_steps
                    logger.log_metrics(metrics, step=step)
                    logger.save()
            for key, value in metrics.items():
                pl_module.log(key, value, logger=False, prog_bar=key.endswith("/d_n"), on_step=True,
                              on_epoch=False, batch_size=1)
        if self.should_stop:
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return self.monitor.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.monitor.load_state_dict(state_dict)
        self.sync_signals()
