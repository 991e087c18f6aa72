"""The gate's verdicts on the shipped ground truth, through the command line, at the calibrated default.

The shipped world knows circles; the world retrained without them (`train-world --exclude circle`)
never saw one. On the calibration's held-out split (images no threshold saw: seed 83_000 in
benchmarks/calibrate_memory_signal.py), with `mofc` and the default `--max-memory`, the gate must
fail the original, pass the retrained world, and read stars and uniform noise (images no model of
this world can make) as "does not remember", without an exception. A few minutes of CPU: the
verdicts the README and the calibration table promise, held on the weights that ship.

The gates write to one output folder with --resume: the three gates of the shipped world take the
reference set's probe that the first of them cached (the gate's cache/sets/; the numbers are those of
a gate that inverts R itself, tests/test_cli_gate.py), so R is inverted once per model, not per gate.
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


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> tuple[Path, set[str]]:
    """The gates' shared output folder, and the models whose reference set a gate here has probed."""
    return tmp_path_factory.mktemp("gates"), set()


def gate(folders: Path, output: tuple[Path, set[str]], model: str, concept: str, capsys) -> tuple[int, dict]:
    folder, probed = output
    (folder / "gate.json").unlink(missing_ok=True)  # the one read below is this gate's
    code, out, err = run_cli(["gate", "--model", model, "--concept-images", str(folders / concept),
                              "--reference-images", str(folders / "reference"), "--output", str(folder),
                              "--preset", "mofc", "--quiet", "--json", "--thumbnails", "0", "--threads", "1",
                              "--resume"], capsys)
    assert "Traceback" not in err, err
    # R's probe is taken from the cache exactly when an earlier gate here probed R on this model
    record = json.loads((folder / "gate.json").read_text())["checkpoints"][0]
    assert record["reference_set"]["from_cache"] is (model in probed) and record["from_cache"] is False
    probed.add(model)
    return code, json_line(out)


def memory_of(report: dict) -> tuple[float, float, float]:
    memory = report["checkpoints"][0]["memory"]
    return memory["value"], memory["ci_low"], memory["ci_high"]


def test_the_gate_fails_the_world_that_knows_circles(folders, output, capsys):
    code, report = gate(folders, output, "shapes-world", "circle", capsys)
    value, low, high = memory_of(report)
    assert (code, report["passed"]) == (1, False), report["reasons"]
    assert high > DEFAULT_MAX_MEMORY and value > 0.5  # measured 0.809 [0.588, 0.981]


def test_the_gate_passes_the_world_that_never_saw_a_circle(folders, output, capsys):
    code, report = gate(folders, output, "shapes-world-without-circle", "circle", capsys)
    value, low, high = memory_of(report)
    assert (code, report["passed"]) == (0, True), report["reasons"]
    assert high <= DEFAULT_MAX_MEMORY  # measured 0.068 [0.000, 0.250]


@pytest.mark.parametrize("kind", ["star", "noise"])
def test_images_no_model_can_make_read_as_not_remembered(folders, output, capsys, kind):
    code, report = gate(folders, output, "shapes-world", kind, capsys)
    value, low, high = memory_of(report)
    assert (code, report["passed"]) == (0, True), report["reasons"]
    assert high <= DEFAULT_MAX_MEMORY  # measured: stars 0.153 [0.000, 0.393], noise 0.000 [0.000, 0.000]
    written = json.loads((output[0] / "gate.json").read_text())
    assert written["checkpoints"][0]["memory"]["value"] == value
