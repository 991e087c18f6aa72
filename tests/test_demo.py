"""The main job on the shipped small model, shortened: erase, probe, gate, report, adapter."""

from __future__ import annotations

import json

import pytest
import torch

from unlearn_guard.demo import DemoConfig, SlowStepHint, run_demo
from unlearn_guard.models import load_lora_adapter
from unlearn_guard.world import load_world_model


def test_demo_erases_probes_gates_and_writes_everything(tmp_path):
    # slow_step_factor ~0: the 4th step (after 3 timed ones) counts as slow, so the hint's wiring shows
    config = DemoConfig(iterations=4, probe_every=2, images_per_set=2, accuracy_images=2, gate_preset="fast",
                        slow_step_factor=1e-9)
    lines = []
    result = run_demo(tmp_path, config, progress=False, echo=lines.append)
    hints = [line for line in lines if line.startswith("hint:")]
    assert len(hints) == 1 and hints[0].startswith("hint: ESD step 4 took") and "--threads 1" in hints[0], lines
    assert [row["step"] for row in result["probes"]] == [0, 2, 4]
    assert all(row["error"] is None and row["d_n"] > 0 and 0 <= row["memory"] <= 1 for row in result["probes"])
    # memory-aware by default: the anchor_path loss ran every step, weighted by the monitor (no target: the maximum)
    assert result["esd_config"]["memory_loss"]["kind"] == "anchor_path"
    assert (result["esd_config"]["memory_loss"]["keep_weight"], result["esd_config"]["memory_loss"]["guidance"]) == (3.0, 0.5)
    assert result["memory_loss"]["weights"] == [config.memory_loss_weight] * 4
    assert all(v is not None and v > 0 for v in result["memory_loss"]["values"])
    assert all(row["memory_loss_weight"] == config.memory_loss_weight for row in result["probes"])
    # three image sets: the loss trains on its own (their score is logged), the monitor decides on
    # others, the gate reads a third; the prompt's accuracy comes from the monitor's PromptCheck
    assert result["image_sets"] == {"memory_loss": 10_000, "monitor": 40_000, "gate": 70_000}
    assert all(0 <= row["loss_memory"] <= 1 and 0 <= row["concept_accuracy"] <= 1 for row in result["probes"])
    assert result["prompt_check"]["max_success"] == config.max_prompt_accuracy == 0.1
    assert result["prompt_check"]["n"] == 2 and result["prompt_check"]["judge"] == "ShapeJudge('circle')"
    gate = result["gate"]
    assert gate["passed"] == (gate["memory_high"] <= config.gate_max_memory) and gate["reasons"][0].startswith("memory M")
    # the target is the retrained world's memory score, measured with the monitor's preset and images
    assert result["target"]["source"].startswith("the world retrained without 'circle'")
    # 2 + 2 images: the retrained world's interval reaches 1, so there is no target to stop on (else every
    # reading would "reach" it at the first probe); the 8 + 8 default gives one (tested in test_demo_target)
    assert result["target"]["memory_high"] == 1.0 and result["target"]["target"] is None
    assert any(line.startswith("target: none:") and "no early stop" in line for line in lines)
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert on_disk["gate"] == result["gate"] and on_disk["esd_config"]["iterations"] == 4
    report = (tmp_path / "report.md").read_text()
    assert "## Gate:" in report and "| 4 |" in report
    assert any("wrote" in line for line in lines)
    # What `unlearn-guard gate` needs to gate the run: an adapter per probe step and the image folders.
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    for part, count in (("concept", 2), ("reference", 2)):
        folder = tmp_path / "images" / part
        assert len(list(folder.glob("*.png"))) == count and (folder / "prompts.csv").is_file()
    assert any("unlearn-guard gate --model shapes-world --checkpoints" in line for line in lines)
    # The saved adapter reproduces the erased model: reload it onto a fresh copy of the shipped model.
    fresh = load_world_model()
    load_lora_adapter(fresh.unet, tmp_path / "adapter")
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    c = fresh.encode_prompts(["a circle"])
    base = load_world_model()
    assert not torch.allclose(fresh.predict_noise(z, 501, c), base.predict_noise(z, 501, c), atol=1e-6)


def test_slow_step_hint_fires_once_at_five_times_the_median():
    hint = SlowStepHint()  # factor 5, after 3 steps
    assert [hint.observe(step, s) for step, s in enumerate([0.5, 0.6, 0.4], start=1)] == [None, None, None]
    assert hint.observe(4, 2.4) is None  # 4.8x the median 0.5: not yet
    line = hint.observe(5, 8.0)  # 16x the median of [0.5, 0.6, 0.4, 2.4] = 0.55
    assert line is not None and line.startswith("hint: ESD step 5 took 8.0 s, 15x the median step (0.55 s)")
    assert "\n" not in line and "--threads 1" in line
    assert hint.observe(6, 20.0) is None  # once only


def test_slow_step_hint_needs_history_and_can_be_off():
    early = SlowStepHint()
    assert early.observe(1, 0.1) is None and early.observe(2, 0.1) is None and early.observe(3, 50.0) is None
    off = SlowStepHint(factor=0)
    assert all(off.observe(step, s) is None for step, s in enumerate([0.1, 0.1, 0.1, 99.0], start=1))
    with pytest.raises(ValueError, match="slow_step_factor"):
        DemoConfig(slow_step_factor=-1)


def test_demo_target_is_the_retrained_worlds_upper_end_with_the_default_images():
    from unlearn_guard import ProbeConfig
    from unlearn_guard.demo import measure_target
    from unlearn_guard.world.evaluate import probe_sets

    config = DemoConfig()
    images = probe_sets(config.concept, config.images_per_set, seed=40_000 + config.seed)  # the monitor's
    probe_config = ProbeConfig.from_preset(config.monitor_preset, seed=config.seed, progress=False)
    target = measure_target(config, probe_config, tuple(images))
    # measured in the demo run: M = 0.335 [0.080, 0.709] with `track` on these 8 + 8 images (the
    # loss's own images, seed 10_000, read 0.209 [0.000, 0.534]): an interval that stays below 1
    assert target["target"] == target["memory_high"] < 0.9
    assert target["memory"] < 0.4 and target["description"].startswith("M's upper end <=")


def test_demo_without_memory_loss_runs_esd_alone(tmp_path):
    config = DemoConfig(iterations=2, probe_every=2, images_per_set=2, accuracy_images=2, gate_preset="fast",
                        memory_loss="none")
    lines = []
    result = run_demo(tmp_path, config, progress=False, echo=lines.append)
    assert result["esd_config"]["memory_loss"] is None and result["memory_loss"] is None
    assert all(row["memory_loss_weight"] is None for row in result["probes"])
    assert any("LoRA alone" in line for line in lines)
    with pytest.raises(ValueError, match="memory_loss: got 'seed_recall'"):
        DemoConfig(memory_loss="seed_recall")
    with pytest.raises(ValueError, match="memory_loss_weight: got 0"):
        DemoConfig(memory_loss_weight=0)
    with pytest.raises(ValueError, match="memory_keep_weight: got -1"):
        DemoConfig(memory_keep_weight=-1)
    with pytest.raises(ValueError, match="max_prompt_accuracy: got 2"):
        DemoConfig(max_prompt_accuracy=2)


def test_the_command_line_defaults_are_the_demo_config_defaults():
    """The cli package writes DemoConfig's defaults out (so --help imports no torch); they must agree."""
    from unlearn_guard.cli import build_parser

    parser = build_parser()
    demo = parser._subparsers._group_actions[0].choices["demo"]
    defaults = DemoConfig()
    for field in ("concept", "method", "iterations", "probe_every", "memory_loss", "memory_loss_min_weight",
                  "memory_keep_weight", "memory_guidance", "max_prompt_accuracy", "seed"):
        assert demo.get_default(field) == getattr(defaults, field), field
