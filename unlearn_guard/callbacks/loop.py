"""Probing from a hand-written training loop (diffusers example scripts, accelerate).

A single-process loop needs nothing but the monitor:

    monitor = ProbeMonitor(model, concept, "a parachute", reference=ref, reference_prompts="a photo",
                           config=MonitorConfig(every_n_steps=100, target=0.5))
    for step in range(1, max_steps + 1):
        ...                              # forward, backward, optimizer.step()
        if monitor.step(step):           # probes on multiples of 100; True once it says stop
            break

A plain DDP loop (torchrun, `init_process_group`) calls `monitor.step(step)` on every rank: each
rank probes its share of the images and all of them get the same result and decision.

With accelerate, wrap it in `AcceleratorProbe`: it probes the unwrapped UNet (the same
parameters, without the DDP wrapper whose forward would wait for the other processes). With
several processes every process probes its share of the images (`ProbeMonitor(distributed=None)`,
the default) and gets the same outcome; with `distributed=False` the main process probes alone
and hands the decision and the loss weight to the others. Either way they all stop at the same
step. Count *optimizer* steps (as the diffusers scripts do with `sync_gradients`):

    accelerator = Accelerator(log_with="tensorboard", project_dir="runs")   # any trackers, or none
    accelerator.init_trackers("erase-parachute")
    unet, optimizer, loader = accelerator.prepare(unet, optimizer, loader)
    vae.to(accelerator.device); text_encoder.to(accelerator.device)
    model = DiffusionModel.from_components(unet=unet, vae=vae, text_encoder=text_encoder,
                                           tokenizer=tokenizer, scheduler=noise_scheduler)
    probing = AcceleratorProbe(ProbeMonitor(model, concept, "a parachute", reference=ref,
                                            config=MonitorConfig(every_n_steps=100, target=0.5)),
                               accelerator)
    global_step = 0
    for batch in loader:
        with accelerator.accumulate(unet):
            loss = esd_loss(batch) + probing.regularization_weight * memory_loss(batch)
            accelerator.backward(loss); optimizer.step(); optimizer.zero_grad()
        if accelerator.sync_gradients:
            global_step += 1
            if probing.step(global_step):   # same answer on every process
                break
    accelerator.end_training()

When the accelerator has trackers (`log_with=...` and `init_trackers`), every probe goes to
`accelerator.log(monitor.metrics(record), step=global_step)`: "<name>/d_n", "<name>/ci_low",
"<name>/ci_high", "<name>/regularization_weight", "<name>/failed", "<name>/failures", ...

`accelerator.register_for_checkpointing(probing)` puts the monitor's history and early-stop
counters into `accelerator.save_state(...)` and back with `accelerator.load_state(...)`.
accelerate keys registered objects by their order; each state also holds its monitor's name,
and loading it into a monitor with another name is refused, so two probes (two monitors with
different names) cannot swap states silently.

A memory loss in this loop (`unlearn_guard.losses`; the adapter's LoRA parameters are the only
ones that get gradients, since the base UNet is frozen), weighted by the monitor and stopped on
the calibrated memory score's target:

    from unlearn_guard.losses import AnchorPathConfig, AnchorPathLoss, concept_latents
    # the probe must keep its seeds: MonitorConfig(signal="memory", target=...,
    #     probe=ProbeConfig.from_preset("track", keep_seeds=True, progress=False))
    # the loss's own images: ProbeMonitor(..., loss_images=...) keeps them apart from the images it decides on
    images, reference = probing.monitor.loss_images, probing.monitor.reference
    memory = AnchorPathLoss(model, concept_latents(model, images.pixels), model.encode_prompts(images.prompts),
                            AnchorPathConfig(steps=20),                   # track's 20 inversion steps
                            seeds=lambda: probing.latest_seeds,           # fixed noise until the first probe
                            reference_latents=concept_latents(model, reference.pixels),
                            reference_embeddings=model.encode_prompts(reference.prompts))
    probing.step(0)                                      # probe once before training: the first seeds
    ...
            loss = esd_loss(batch) + probing.regularization_weight * memory()

(`SeedRecallLoss` and `InversionLikelihoodLoss` are the other losses; `esd_lora_erase(..., monitor=...)` with
`ESDConfig(memory_loss=...)` does all of this for ESD.)
With `distributed=False` the other processes wait for the main one while it probes (inside the
broadcast), so keep such a probe well under the process group's timeout (30 minutes by default).
"""

from __future__ import annotations

import weakref
from typing import Any

from ..errors import InputError
from .monitor import ProbeMonitor
from .signals import MonitorSignals

# Monitor names in use per accelerator: two probes logging under one name would mix their metrics.
_NAMES: "weakref.WeakKeyDictionary[Any, set[str]]" = weakref.WeakKeyDictionary()


class AcceleratorProbe(MonitorSignals):
    """Runs a `ProbeMonitor` inside an accelerate loop: every process probes its share (or the
    main process alone, `distributed=False`); the decisions are the same on every process.

    Args:
        monitor: the monitor; its model's UNet is replaced by `accelerator.unwrap_model(unet)`
            (the same module and parameters, minus distributed wrappers). Its `name` keys the
            logged metrics; give each probe of one accelerator its own.
        accelerator: an `accelerate.Accelerator` (after `prepare`, so the model is on its device).
    Attributes:
        should_stop / regularization_weight: the same on every process.
        last_record: the record of the latest probe (on every process when the probe is shared;
            else on the main process, None elsewhere).
    """

    def __init__(self, monitor: ProbeMonitor, accelerator: Any) -> None:
        self.check_monitor(monitor)
        try:
            names = _NAMES.setdefault(accelerator, set())
        except TypeError:  # an object without weak references (a stand-in in tests): nothing to compare with
            names = set()
        if monitor.name in names:
            raise InputError(f"this accelerator already has a probe for a monitor named {monitor.name!r}; "
                             "give each ProbeMonitor its own name=")
        self.accelerator = accelerator
        monitor.model.unet = accelerator.unwrap_model(monitor.model.unet)
        monitor.check()
        names.add(monitor.name)
        self.attach_monitor(monitor)

    def step(self, step: int) -> bool:
        """Probe on multiples of `every_n_steps` (main process), log it to the accelerator's
        trackers, share the outcome; True to stop."""
        if step % self.monitor.config.every_n_steps != 0:
            return self.should_stop
        if self.accelerator.num_processes > 1 and self.monitor.shards:
            # Every process probes its share and gets the same result: same record, same decision.
            record = self.monitor.maybe_probe(step)
            self.last_record = record or self.last_record
            if record is not None and self.accelerator.is_main_process and getattr(self.accelerator, "trackers", None):
                self.accelerator.log(self.monitor.metrics(record), step=step)
            self.should_stop, self.regularization_weight = self.monitor.should_stop, self.monitor.regularization_weight
            return self.should_stop
        if self.accelerator.is_main_process:
            record = self.monitor.maybe_probe(step)
            self.last_record = record or self.last_record
            if record is not None and getattr(self.accelerator, "trackers", None):
                self.accelerator.log(self.monitor.metrics(record), step=step)
        decision = [self.monitor.should_stop, self.monitor.regularization_weight]
        if self.accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(decision, from_process=0)
        self.should_stop, self.regularization_weight = bool(decision[0]), float(decision[1])
        return self.should_stop

    def state_dict(self) -> dict[str, Any]:
        """The monitor's state (save it from the main process, next to the model)."""
        return self.monitor.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.monitor.load_state_dict(state)
        self.sync_signals()
