"""`ProbeTrainerCallback`: a `ProbeMonitor` inside a Hugging Face `transformers.Trainer`.

    from unlearn_guard.callbacks.transformers import ProbeTrainerCallback

    trainer = Trainer(model=wrapper, args=args, train_dataset=data)
    trainer.add_callback(ProbeTrainerCallback(monitor, trainer))
    trainer.train()                       # or trainer.train(resume_from_checkpoint=any_checkpoint_folder)

`monitor.model` must hold the UNet that `wrapper` trains. At each `on_step_end` with
`state.global_step % every_n_steps == 0` every process probes its share of the images and gets
the same outcome (in a multi-process run, `ProbeMonitor(distributed=None)`, the default; with
`distributed=False` the world process zero probes alone and the outcome is broadcast); then:
  - the probe's numbers go through `trainer.log` (the Trainer's own path): they land in
    `state.log_history` with the step, and every callback's `on_log` receives them, so the
    console, TensorBoard, W&B and the other `report_to` integrations show them. Keys are
    `monitor.metrics(record)`: "<name>/d_n", "<name>/ci_low", "<name>/ci_high",
    "<name>/regularization_weight", "<name>/failed", "<name>/failures", ... (name "probe" by
    default); a failed probe logs "<name>/failed" = 1;
  - `control.should_training_stop` is set once the monitor says stop.
A custom `compute_loss` can read `callback.regularization_weight`.

The callback takes the trainer because a `TrainerCallback` is never handed it, and logging
through `on_log` alone would miss the integrations listed before it (as the trl callbacks do).

Checkpoints: the monitor's state travels inside `trainer_state.json`, under
`state.stateful_callbacks["unlearn_guard.ProbeMonitor/<name>"]`, so a resume restores it from
the checkpoint the Trainer actually resumes from, wherever that folder is; a resume that finds
no state for this monitor says so with a `ProbeWarning`. (transformers' own restore of stateful
callbacks re-creates them from JSON arguments, which a monitor holding a model cannot be; with
`restore_callback_states_from_checkpoint=True` it logs that it ignores these entries.)

Two monitors: add one callback per monitor, each monitor with its own `name`; transformers
logs that a second callback of this class was added, which is expected here.

A memory loss in a custom `compute_loss` (`unlearn_guard.losses`; gradients reach only the
trainable adapter), weighted by the monitor; the callback stops training on the calibrated
memory score's target (`MonitorConfig(signal="memory", target=...)`):

    from unlearn_guard.losses import InversionLikelihoodConfig, InversionLikelihoodLoss, concept_latents
    images = monitor.loss_images  # ProbeMonitor(..., loss_images=...): apart from the images it decides on
    memory = InversionLikelihoodLoss(monitor.model, concept_latents(monitor.model, images.pixels),
                                     monitor.model.encode_prompts(images.prompts),
                                     InversionLikelihoodConfig(steps=10))

    class ErasingTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
            loss = esd_loss(model, inputs) + callback.regularization_weight * memory()
            return loss
(`SeedRecallLoss(..., seeds=lambda: callback.latest_seeds)` and `AnchorPathLoss(..., seeds=lambda:
callback.latest_seeds, reference_latents=..., reference_embeddings=...)` read the probe's seeds
instead, with keep_seeds=True in the probe config; what each loss did is measured in
benchmarks/RESULTS.md, memory_aware_erasure.)
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..errors import InputError
from .monitor import ProbeMonitor
from .signals import MonitorSignals
from .warnings import warn_probe

STATE_KEY_PREFIX = "unlearn_guard.ProbeMonitor/"


def _broadcast_from_zero(values: list[Any]) -> list[Any]:
    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1:
        torch.distributed.broadcast_object_list(values, src=0)
    return values


class ProbeTrainerCallback(MonitorSignals, TrainerCallback):
    """Probes every `monitor.config.every_n_steps` optimizer steps, logs through the trainer,
    stops training when told.

    Args:
        monitor: a `ProbeMonitor` built on the model the Trainer updates; its `name` keys the
            logged metrics and the saved state.
        trainer: the `transformers.Trainer` this callback is added to (`trainer.add_callback`).
    Attributes:
        regularization_weight / should_stop: the monitor's signals, the same on every process.
        last_record: the latest probe's record (every process when probes are shared; else
            process zero, None elsewhere).
    """

    def __init__(self, monitor: ProbeMonitor, trainer: Any) -> None:
        self.check_monitor(monitor)
        if not callable(getattr(trainer, "log", None)):
            raise InputError(f"trainer: got {type(trainer).__name__}, expected the transformers.Trainer "
                             "this callback is added to")
        self.attach_monitor(monitor)
        self.trainer = trainer

    @property
    def state_key(self) -> str:
        """Where the monitor's state sits in `TrainerState.stateful_callbacks`."""
        return STATE_KEY_PREFIX + self.monitor.name

    def _check_setup(self, state: TrainerState) -> None:
        if state is not self.trainer.state:
            raise InputError("ProbeTrainerCallback runs in a Trainer other than the one it was given; "
                             "build it with the trainer you add it to")
        names = [cb.monitor.name for cb in self.trainer.callback_handler.callbacks
                 if isinstance(cb, ProbeTrainerCallback)]
        if names.count(self.monitor.name) > 1:
            raise InputError(f"{names.count(self.monitor.name)} probe callbacks share the monitor name "
                             f"{self.monitor.name!r}; give each ProbeMonitor its own name=")

    def _publish(self, state: TrainerState) -> None:
        # The checkpoint written at this step reads it (trainer_state.json is saved after on_step_end).
        if state.is_world_process_zero:
            state.stateful_callbacks[self.state_key] = self.monitor.state_dict()

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        self._check_setup(state)
        self.monitor.check()  # after the Trainer moved the model: parts on one device, backend usable
        if state.global_step > 0:  # resuming: state is the checkpoint's trainer_state.json
            saved = state.stateful_callbacks.get(self.state_key)
            if saved is not None:
                self.monitor.load_state_dict(saved)
            elif state.is_world_process_zero:
                warn_probe(f"resuming at step {state.global_step}, but the checkpoint holds no state for monitor "
                           f"{self.monitor.name!r}: its history, patience counter and stop decision start over")
        self.regularization_weight = self.monitor.regularization_weight
        self.should_stop = self.monitor.should_stop
        self._publish(state)
        return control

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        step = state.global_step
        if step % self.monitor.config.every_n_steps != 0:
            return control
        if self.monitor.shards:  # every process probes its share; the outcome is the same everywhere
            record = self.monitor.maybe_probe(step)
            metrics = None if record is None else self.monitor.metrics(record)
            should_stop, weight = self.monitor.should_stop, self.monitor.regularization_weight
        else:
            record = self.monitor.maybe_probe(step) if state.is_world_process_zero else None
            metrics = None if record is None else self.monitor.metrics(record)
            metrics, should_stop, weight = _broadcast_from_zero(
                [metrics, self.monitor.should_stop, self.monitor.regularization_weight])
        self.should_stop, self.regularization_weight = bool(should_stop), float(weight)
        if record is not None:
            self.last_record = record
            self._publish(state)
        if metrics:
            self.trainer.log(dict(metrics))  # log_history + every callback's on_log, on every process
        if self.should_stop:
            control.should_training_stop = True
        return control
