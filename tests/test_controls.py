"""The negative control and the typical-set rule, end to end: a broken model cannot fool the verdict.

A UNet with every weight zero predicts eps = 0: DDIM inversion only shrinks each latent toward zero
and the reconstruction undoes that exactly, so under the old likelihood position every image, concept
or not, read as remembered (M = 0.999, "still remembers"). A randomly initialised UNet of the same
config does much the same. Both must now be gated as inconclusive through the command line, while the
shipped world keeps a verdict.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from _gate_helpers import gate_args, json_line, run_cli
from unlearn_guard import probe
from unlearn_guard.config import ProbeConfig
from unlearn_guard.controls import CONTROL_KINDS, control_cost, control_set
from unlearn_guard.errors import EXIT_INCONCLUSIVE, InputError
from unlearn_guard.gate.folders import save_image_folder
from unlearn_guard.world import load_world_model
from unlearn_guard.world.evaluate import probe_sets

FAST = ["--preset", "fast", "--set", "bootstrap_samples=100", "--thumbnails", "2", "--quiet"]


def test_the_control_set_is_made_from_the_seed_with_both_prompts():
    config = ProbeConfig(control_images=5)
    first = control_set(config, 32, ["a circle", "a circle", "a red circle"])
    again = control_set(config, 32, ["a circle"])
    other = control_set(config.replace(seed=1), 32, ["a circle"])
    assert len(first) == 10 and first.pixels.shape == (10, 3, 32, 32)
    assert torch.equal(first.pixels, again.pixels) and not torch.equal(first.pixels, other.pixels)
    assert first.pixels.min() >= -1 and first.pixels.max() <= 1
    # each image twice: a concept prompt (cycled over E's distinct prompts), then the neutral prompt
    assert first.prompts == ["a circle", "a red circle", "a circle", "a red circle", "a circle"] + [""] * 5
    assert torch.equal(first.pixels[:5], first.pixels[5:])
    assert [name.split(":")[1].split("-")[0] for name in first.names[:4]] == [k.split("-")[0] for k in CONTROL_KINDS]
    assert first.names[0].endswith("|concept") and first.names[5].endswith("|neutral")
    assert len({image.sum().item() for image in first.pixels[:5]}) == 5  # five different images
    assert control_set(config.replace(control_images=0), 32, ["a circle"]) is None
    assert control_cost(config, 40) == 400


@pytest.mark.parametrize("value", [-1, 65, 2.5, True])
def test_control_images_is_checked(value):
    with pytest.raises(InputError, match="control_images"):
        ProbeConfig(control_images=value)


def test_the_probe_runs_the_control_and_reports_it():
    sets = probe_sets("circle", 3, seed=2_000)
    world = load_world_model()
    config = ProbeConfig.from_preset("fast", progress=False, bootstrap_samples=50, control_images=2)
    result = probe(world, sets.concept, sets.concept_prompts, reference=sets.reference,
                   reference_prompts=sets.reference_prompts, config=config)
    assert result.control is not None and len(result.control.images) == 4
    assert result.control.unet_evaluations == control_cost(config, result.erased.unet_evaluations // 3)
    assert result.control_memory is not None and 0.0 <= result.control_memory.value <= 1.0
    data = json.loads(result.to_json())
    assert data["control_memory"]["n_images"] == 4 and len(data["control"]["images"]) == 4
    assert "control M =" in result.summary_table()
    with pytest.warns(UserWarning, match="negative control is off"):
        off = probe(world, sets.concept, sets.concept_prompts, reference=sets.reference,
                    reference_prompts=sets.reference_prompts, config=config.replace(control_images=0))
    assert off.control is None and off.control_memory is None and "control: off" in off.summary_table()
    # E's numbers do not depend on the control
    assert torch.equal(off.erased.nll, result.erased.nll) and off.memory.value == result.memory.value


def _degenerate_weights(kind: str, path):
    unet = load_world_model().unet
    if kind == "zeros":
        state = {key: torch.zeros_like(value) for key, value in unet.state_dict().items()}
    else:  # a fresh UNet of the same config, seeded
        from diffusers import UNet2DConditionModel

        torch.manual_seed(0)
        state = UNet2DConditionModel.from_config(unet.config).state_dict()
    save_file({key: value.contiguous() for key, value in state.items()}, str(path))
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("controls")
    sets = probe_sets("circle", 4, seed=12_000)
    save_image_folder(root / "concept", sets.concept, sets.concept_prompts, prefix="circle")
    save_image_folder(root / "reference", sets.reference, sets.reference_prompts, prefix="other")
    return root


@pytest.mark.parametrize("kind", ["zeros", "random-init"])
def test_a_degenerate_unet_is_gated_inconclusive_through_the_cli(kind, folders, tmp_path, capsys):
    weights = _degenerate_weights(kind, tmp_path / f"{kind}.safetensors")
    output = tmp_path / "gate"
    code, out, err = run_cli(gate_args(folders, output, "--unet-weights", str(weights), *FAST, "--json"), capsys)
    assert code == EXIT_INCONCLUSIVE, err
    verdict = json_line(out)
    assert verdict["verdict"] == "inconclusive" and verdict["exit_code"] == EXIT_INCONCLUSIVE and not verdict["passed"]
    reasons = " ".join(verdict["checkpoints"][0]["reasons"])
    assert "inconclusive: memory score undefined" in reasons and "typical" in reasons
    assert "still remembers" not in reasons and "forgotten" not in reasons
    report = json.loads((output / "gate.json").read_text())
    assert report["verdict"] == "inconclusive" and report["checkpoints"][0]["inconclusive"]
    assert "INCONCLUSIVE" in (output / "report.html").read_text()


def test_the_shipped_world_keeps_a_verdict_with_the_control_beside_it(folders, tmp_path, capsys):
    # the positive side of the control: the healthy model is not called inconclusive, and its control
    # images (which no model can have learned) do not read as remembered
    code, out, _ = run_cli(gate_args(folders, tmp_path / "gate", *FAST, "--json"), capsys)
    verdict = json_line(out)
    assert code in (0, 1) and verdict["verdict"] in ("pass", "fail")
    control = verdict["checkpoints"][0]["control_memory"]
    assert control["n_images"] == 8 and control["value"] < 0.404
    assert control["unet_evaluations"] == 8 * 40
    assert "negative control M = " in verdict["checkpoints"][0]["reasons"][0]
