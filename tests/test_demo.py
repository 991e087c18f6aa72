"""The main job on the shipped small model, shortened: erase, probe, gate, report, adapter."""

from __future__ import annotations

import json

import torch

from unlearn_guard.demo import DemoConfig, run_demo
from unlearn_guard.models import load_lora_adapter
from unlearn_guard.world import load_world_model


def test_demo_erases_probes_gates_and_writes_everything(tmp_path):
    config = DemoConfig(iterations=4, probe_every=2, images_per_set=2, accuracy_images=2, gate_preset="fast")
    lines = []
    result = run_demo(tmp_path, config, progress=False, echo=lines.append)
    assert [row["step"] for row in result["probes"]] == [0, 2, 4]
    assert all(row["error"] is None and row["d_n"] > 0 for row in result["probes"])
    assert result["gate"]["passed"] == (result["gate"]["d_n"] >= config.gate_min_d_n)
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
