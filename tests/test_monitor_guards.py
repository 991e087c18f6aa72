"""The monitor's two guards against a memory loss that games the probe: separate `loss_images`
(decisions read images the loss never sees) and a `PromptCheck` (the target counts only when the
concept's own prompt no longer draws it). Real probes on the tiny model where measurement
matters, scripted results where only decisions do."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from unlearn_guard.attacks import prompt_success
from unlearn_guard.callbacks import MonitorConfig, ProbeMonitor, PromptCheck
from unlearn_guard.errors import InputError
from unlearn_guard.probe import measure_memory, probe

from test_callbacks import CHEAP, fake_memory_result, one_thread  # noqa: F401 - one_thread: autouse fixture


def more_images(count: int, seed: int) -> torch.Tensor:
    """`count` fresh smooth 64x64 images in [0, 1], unlike the fixture's."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False).clamp(0, 1)


class Switch:
    """A judge that calls every image the concept while `on`, none after: a prompt that stops drawing it."""

    def __init__(self) -> None:
        self.on = True
        self.calls = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.full((images.shape[0],), self.on, dtype=torch.bool)


# --------------------------------------------------------------------------- loss_images


def test_decisions_read_images_the_loss_never_sees(tiny_model, tiny_images):
    """The record's numbers equal a probe of `images` alone; the seeds and `loss_memory` are the
    loss images' (the second part of one joined probe)."""
    images, reference, loss_images = tiny_images[:2], tiny_images[2:], more_images(3, 7)
    config = dataclasses.replace(CHEAP, keep_seeds=True)
    monitor = ProbeMonitor(tiny_model, images, "a red circle", reference=reference, reference_prompts="a blue square",
                           loss_images=loss_images, loss_prompts="a red circle",
                           config=MonitorConfig(every_n_steps=1, probe=config))
    assert monitor.holds_out and len(monitor.loss_images) == 3 and len(monitor.images) == 2
    record = monitor.probe_now(1)
    alone = probe(tiny_model, images, "a red circle", reference=reference, reference_prompts="a blue square",
                  config=config)
    # equal up to float32 batching (a chunk of 5 images against one of 2)
    close = dict(rel=1e-6)
    assert (record.memory, record.memory_high) == pytest.approx((alone.memory.value, alone.memory.ci_high), **close)
    assert (record.d_n, record.ci_low) == pytest.approx((alone.memory_distance.value, alone.memory_distance.ci_low),
                                                        **close)
    assert record.erased_nll_mean == pytest.approx(float(alone.erased.nll.mean()), **close)
    joined = probe(tiny_model, torch.cat([images, loss_images]), "a red circle", reference=reference,
                   reference_prompts="a blue square", config=config)
    seeds = monitor.latest_seeds
    assert seeds.shape == (3, 4, 8, 8) and torch.equal(seeds, joined.erased.seeds[2:].float())
    tail = dataclasses.replace(joined.erased, images=joined.erased.images[2:])
    _, expected, _ = measure_memory(tail, joined.reference, joined.normal_nll, config)
    assert (record.loss_memory, record.loss_memory_low, record.loss_memory_high) == (
        expected.value, expected.ci_low, expected.ci_high)
    metrics = monitor.metrics(record)
    assert metrics["probe/loss_memory"] == record.loss_memory and "probe/prompt_success" not in metrics
    again = ProbeMonitor(tiny_model, images, "a red circle", reference=reference, reference_prompts="q",
                         loss_images=loss_images, loss_prompts="a red circle",
                         config=MonitorConfig(every_n_steps=1, probe=config))
    again.load_state_dict(json.loads(json.dumps(monitor.state_dict())))
    assert again.history[-1].loss_memory == record.loss_memory


def test_without_loss_images_the_loss_trains_on_the_monitor_images(tiny_model, tiny_images):
    monitor = ProbeMonitor(tiny_model, tiny_images[:2], "a red circle", reference=tiny_images[2:], reference_prompts="q",
                           config=MonitorConfig(every_n_steps=1, probe=CHEAP))
    assert not monitor.holds_out and monitor.loss_images is monitor.images


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(loss_images="same"), r"loss_images: 1 image\(s\) also in images"),
        (dict(loss_prompts="a circle"), "loss_prompts: given without loss_images"),
        (dict(prompt_check="a circle"), "prompt_check: got str; expected a PromptCheck"),
    ],
)
def test_misused_guards_are_refused(tiny_model, tiny_images, kwargs, match):
    if kwargs.get("loss_images") == "same":
        kwargs = dict(loss_images=torch.cat([more_images(2, 3), tiny_images[1:2]]), loss_prompts="a red circle")
    with pytest.raises(InputError, match=match):
        ProbeMonitor(tiny_model, tiny_images[:2], "a red circle", reference=tiny_images[2:], reference_prompts="q",
                     config=MonitorConfig(every_n_steps=1, probe=CHEAP), **kwargs)


# --------------------------------------------------------------------------- the prompt check


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(prompt=""), "prompt"),
        (dict(judge="classifier"), "judge"),
        (dict(max_success=1.5), "max_success"),
        (dict(n=0), "'n'"),
        (dict(seed=-1), "seed"),
        (dict(num_steps=0), "num_steps"),
        (dict(guidance_scale=0.5), "guidance_scale"),
        (dict(n=True), "'n'"),
    ],
)
def test_prompt_check_rejects_bad_values(fields, match):
    settings = dict(prompt="a circle", judge=Switch())
    settings.update(fields)
    with pytest.raises(InputError, match=match):
        PromptCheck(**settings)


def test_prompt_check_measures_what_prompt_success_measures(tiny_model):
    """The share is `prompt_success`'s rate with the check's settings; the judge sees n images."""
    seen = []

    def judge(images: torch.Tensor) -> torch.Tensor:
        seen.append(images.shape)
        return images.mean(dim=(1, 2, 3)) > float(images.mean())  # about half, depending on the pixels

    check = PromptCheck("a red circle", judge, n=4, seed=5, num_steps=3, guidance_scale=2.0)
    share = check.success(tiny_model)
    direct = prompt_success(tiny_model, "a red circle", judge, 4, seed=5, num_steps=3, guidance_scale=2.0)
    assert share == direct.rate and seen[0] == (4, 3, 64, 64)
    assert check.passes(0.1) and not check.passes(0.11) and not check.passes(None)
    assert check.to_dict()["judge"].endswith("judge") and check.to_dict()["n"] == 4


def test_the_target_waits_for_the_prompt_check(tiny_model, tiny_images):
    """Memory at the target with the prompt still drawing the concept: no stop; once the judge
    finds no concept, the next probe at the target stops. The share is recorded and logged."""
    queue = [(0.3, 0.2, 0.45)] * 3
    judge = Switch()
    check = PromptCheck("a red circle", judge, max_success=0.1, n=2, num_steps=2)
    monitor = ProbeMonitor(tiny_model, tiny_images[:2], "a red circle", reference=tiny_images[2:], reference_prompts="q",
                           config=MonitorConfig(every_n_steps=1, probe=CHEAP, target=0.5),
                           probe_fn=lambda *args: fake_memory_result(*queue.pop(0)), prompt_check=check)
    record = monitor.probe_now(1)
    assert record.prompt_success == 1.0 and not monitor.should_stop
    assert monitor.regularization_weight == 0.0  # the weight reads the memory signal alone
    assert monitor.metrics(record)["probe/prompt_success"] == 1.0
    judge.on = False
    record = monitor.probe_now(2)
    assert record.prompt_success == 0.0 and monitor.should_stop and monitor.stop_reason == "target"
    assert judge.calls == 2
    restored = ProbeMonitor(tiny_model, tiny_images[:2], "a red circle", reference=tiny_images[2:], reference_prompts="q",
                            config=MonitorConfig(every_n_steps=1, probe=CHEAP, target=0.5), prompt_check=check)
    restored.load_state_dict(json.loads(json.dumps(monitor.state_dict())))
    assert [r.prompt_success for r in restored.history] == [1.0, 0.0] and restored.should_stop


def test_a_failing_judge_is_a_recorded_probe_failure(tiny_model, tiny_images):
    def broken(images):
        raise RuntimeError("detector offline")

    from unlearn_guard.callbacks import ProbeWarning

    monitor = ProbeMonitor(tiny_model, tiny_images[:2], "a red circle", reference=tiny_images[2:], reference_prompts="q",
                           config=MonitorConfig(every_n_steps=1, probe=CHEAP, target=0.5),
                           probe_fn=lambda *args: fake_memory_result(0.3, 0.2, 0.45),
                           prompt_check=PromptCheck("a red circle", broken, n=2, num_steps=2))
    with pytest.warns(ProbeWarning, match="detector offline"):
        record = monitor.probe_now(1)
    assert not record.ok and not monitor.should_stop and monitor.failures == 1
