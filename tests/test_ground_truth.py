"""The gate's verdicts on the shipped ground truth, through the command line, at the calibrated default.

The shipped world knows circles; the world retrained without them (`train-world --exclude circle`)
never saw one. On the calibration's held-out split (images no threshold saw: seed 83_000 in
benchmarks/calibrate_memory_signal.py), with `mofc` and the default `--max-memory`, the gate must
fail the original, pass the retrained world, and read stars and uniform noise (images no model of
this world can make) as "does not remember", without an exception. A few minutes of CPU: the
verdicts the README and the calibration table promise, held on the weights that ship.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unlearn_guard.gate.folders import save_image_folder
from unlearn_guard.signal import DEFAULT_MAX_MEMORY
from unlearn_guard.world.evaluate import out_of_world_images, probe_sets

from _gate_helpers import json_line, run_cli

HELDOUT_SEED = 83_000  # the calibration's held-out split: nothing was tuned on it
IMAGES = 12  # per set, as in the calibration


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ground_truth")
    sets = probe_sets("circle", IMAGES, seed=HELDOUT_SEED)
    save_image_folder(root / "circle", sets.concept, sets.concept_prompts, prefix="circle")
    save_image_folder(root / "reference", sets.reference, sets.reference_prompts, prefix="other")
    for kind in ("star", "noise"):  # the calibration's out-of-world sets (seed + 500)
        images, prompts = out_of_world_images(kind, IMAGES, seed=HELDOUT_SEED + 500)
        save_image_folder(root / kind, images, prompts, prefix=kind)
    return root


def gate(folders: Path, tmp_path: Path, model: str, concept: str, capsys) -> tuple[int, dict]:
    code, out, err = run_cli(["gate", "--model", model, "--concept-images", str(folders / concept),
                              "--reference-images", str(folders / "reference"), "--output", str(tmp_path / "gate"),
                              "--preset", "mofc", "--quiet", "--json", "--thumbnails", "0", "--threads", "1"], capsys)
    assert "Traceback" not in err, err
    return code, json_line(out)


def memory_of(report: dict) -> tuple[float, float, float]:
    memory = report["checkpoints"][0]["memory"]
    return memory["value"], memory["ci_low"], memory["ci_high"]


def test_the_gate_fails_the_world_that_knows_circles(folders, tmp_path, capsys):
    code, report = gate(folders, tmp_path, "shapes-world", "circle", capsys)
    value, low, high = memory_of(report)
    assert (code, report["passed"]) == (1, False), report["reasons"]
    assert high > DEFAULT_MAX_MEMORY and value > 0.5  # measured 0.809 [0.588, 0.981]


def test_the_gate_passes_the_world_that_never_saw_a_circle(folders, tmp_path, capsys):
    code, report = gate(folders, tmp_path, "shapes-world-without-circle", "circle", capsys)
    value, low, high = memory_of(report)
    assert (code, report["passed"]) == (0, True), report["reasons"]
    assert high <= DEFAULT_MAX_MEMORY  # measured 0.068 [0.000, 0.250]


@pytest.mark.parametrize("kind", ["star", "noise"])
def test_images_no_model_can_make_read_as_not_remembered(folders, tmp_path, capsys, kind):
    code, report = gate(folders, tmp_path, "shapes-world", kind, capsys)
    value, low, high = memory_of(report)
    assert (code, report["passed"]) == (0, True), report["reasons"]
    assert high <= DEFAULT_MAX_MEMORY  # measured: stars 0.153 [0.000, 0.393], noise 0.000 [0.000, 0.000]
    written = json.loads((tmp_path / "gate" / "gate.json").read_text())
    assert written["checkpoints"][0]["memory"]["value"] == value
