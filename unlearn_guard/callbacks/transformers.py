"""`ProbeTrainerCallback`: a `ProbeMonitor` inside a Hugging Face `transformers.Trainer`.

    from unlearn_guard.callbacks import MonitorConfig, ProbeMonitor
    from unlearn_guard.callbacks.transformers import ProbeTrainerCallback

    monitor = ProbeMonitor(model, concept, "a parachute", reference=ref, reference_prompts="a photo",
                           config=MonitorConfig(every_n_steps=100, target_d_n=2.0, patience=5))
    trainer = Trainer(model=wrapper, args=args, train_dataset=data,
                      callbacks=[ProbeTrainerCallback(monitor)])
    trainer.train()
    monitor.history                      # one ProbeRecord per probe

`model` must hold the UNet that `wrapper` trains. At each `on_step_end` with
`state.global_step % every_n_steps == 0` the world process zero probes; d_N goes into
`state.log_history` as {"probe/d_n", "probe/ci_low", "probe/ci_high",
"probe/regularization_weight", "step"}, and `control.should_training_stop` is set once the
monitor says stop (the decision is broadcast when torch.distributed runs several processes).
A custom `compute_loss` can read `callback.regularization_weight`.

Checkpoints: the monitor's state is written as `probe_monitor.json` into each checkpoint folder;
`trainer.train(resume_from_checkpoint=...)` reads it back for checkpoints under
`args.output_dir` (transformers restores stateful callbacks by re-creating them from JSON
arguments, which a monitor holding a model cannot be).
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from .monitor import ProbeMonitor, ProbeRecord

STATE_FILE = "probe_monitor.json"
_CHECKPOINT_PREFIX = "checkpoint"  # transformers.trainer_utils.PREFIX_CHECKPOINT_DIR


def _broadcast_from_zero(values: list[Any]) -> list[Any]:
    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1:
        torch.distributed.broadcast_object_list(values, src=0)
    return values


class ProbeTrainerCallback(TrainerCallback):
    """Probes every `monitor.config.every_n_steps` optimizer steps; stops training when told.

    Args:
        monitor: a `ProbeMonitor` built on the model the Trainer updates.
    Attributes:
        regularization_weight / should_stop: the monitor's signals, the same on every process.
        last_record: the latest probe's record (process zero; None elsewhere).
    """

    def __init__(self, monitor: ProbeMonitor) -> None:
        self.monitor = monitor
        self.regularization_weight: float = monitor.regularization_weight
        self.should_stop: bool = monitor.should_stop
        self.last_record: ProbeRecord | None = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        path = os.path.join(args.output_dir, f"{_CHECKPOINT_PREFIX}-{state.global_step}", STATE_FILE)
        if state.global_step > 0 and not self.monitor.history and os.path.isfile(path):
            with open(path) as stream:
                self.monitor.load_state_dict(json.load(stream))
            self.regularization_weight = self.monitor.regularization_weight
            self.should_stop = self.monitor.should_stop
        return control

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        step = state.global_step
        if step % self.monitor.config.every_n_steps != 0:
            return control
        record = None
        if state.is_world_process_zero:
            record = self.monitor.maybe_probe(step)
        shared = _broadcast_from_zero([
            None if record is None else record.to_dict(),
            self.monitor.should_stop,
            self.monitor.regularization_weight,
        ])
        record_dict, self.should_stop, self.regularization_weight = shared[0], bool(shared[1]), float(shared[2])
        if record is not None:
            self.last_record = record
        if record_dict is not None and record_dict["error"] is None:
            state.log_history.append({
                "probe/d_n": float(record_dict["d_n"]),
                "probe/ci_low": float(record_dict["ci_low"]),  # to_dict wrote nan as "nan"
                "probe/ci_high": float(record_dict["ci_high"]),
                "probe/regularization_weight": self.regularization_weight,
                "step": step,
            })
        if self.should_stop:
            control.should_training_stop = True
        return control

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        folder = os.path.join(args.output_dir, f"{_CHECKPOINT_PREFIX}-{state.global_step}")
        if state.is_world_process_zero and os.path.isdir(folder):
            with open(os.path.join(folder, STATE_FILE), "w") as stream:
                json.dump(self.monitor.state_dict(), stream, indent=2)
        return control
