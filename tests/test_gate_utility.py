"""`unlearn-guard gate --attacks ...,utility` on the shipped world: a checkpoint whose erasure came
from breaking the model (the world's UNet redrawn from its config, given as a weight file) fails as
"utility lost", never "forgotten", while the world retrained without circles keeps its utility;
the base model is measured once per run and cached; a resumed run measures nothing and gives the
same parts; --min-utility decides from the cache; the CLIP-score path (a tiny CLIP) runs through
the gate; the flags' one-line errors; the rule beside the memory rule on its own."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from _gate_helpers import CHEAP, image_folders, json_line, run_cli

torch.set_num_threads(1)

# 4 images per kept shape under the world's evaluation setting: a base that draws its shapes scores
# about 0.9, a destroyed UNet about 1/5 (its images ignore the prompt; tests/test_utility.py).
UTILITY = ["--utility-erased", "circle", "--utility-n", "4", "--utility-settings", "ddim:4:25"]


def destroyed_unet_file(path):
    """The shipped world's UNet re-initialised from its config (seed 0), saved as a weight file."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from unlearn_guard.world import WEIGHTS_DIR

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(WEIGHTS_DIR / "pipeline" / "unet")))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.contiguous() for name, tensor in unet.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Image folders and checkpoints/: checkpoint-1 the destroyed UNet (a file), checkpoint-2 the world
    retrained without circles (a diffusers unet/ folder)."""
    from unlearn_guard.world import retrained_world_dir

    root = image_folders(tmp_path_factory.mktemp("utility"), 3)
    destroyed_unet_file(root / "checkpoints" / "checkpoint-1" / "diffusion_pytorch_model.safetensors")
    shutil.copytree(retrained_world_dir("circle") / "pipeline" / "unet", root / "checkpoints" / "checkpoint-2" / "unet")
    return root


def gate_argv(root, output, *extra):
    return ["gate", "--model", "shapes-world", "--concept-images", str(root / "concept"), "--reference-images",
            str(root / "reference"), "--output", str(output), *CHEAP, *extra]


@pytest.fixture(scope="module")
def gated(world, tmp_path_factory):
    """One gate with memory and utility over both checkpoints: (exit code, stdout, gate.json, output folder)."""
    import io
    from contextlib import redirect_stdout

    from unlearn_guard.cli import main

    out = tmp_path_factory.mktemp("gated") / "out"
    argv = [a for a in gate_argv(world, out, "--checkpoints", str(world / "checkpoints"), "--attacks",
                                 "memory,utility", *UTILITY) if a != "--quiet"]
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        code = main(argv)
    return code, stdout.getvalue(), json.loads((out / "gate.json").read_text()), out


def test_a_destroyed_unet_fails_as_utility_lost_and_the_retrained_world_keeps_utility(gated):
    code, stdout, report, _ = gated
    destroyed, retrained = report["checkpoints"]
    assert destroyed["verdict"] == "fail" and destroyed["failed"] == ["utility"] and code == 1
    assert destroyed["reasons"][-1].startswith("utility lost: accuracy ratio ")
    assert " < 0.55 (--min-utility) under " in destroyed["reasons"][-1]  # the gate's own flag, not the API field
    assert not any("forgotten" in reason for reason in destroyed["reasons"])
    assert destroyed["utility"]["ratio"] < 0.35 < report["thresholds"]["min_utility"] == 0.55  # the tuned default
    assert retrained["reasons"][-1].startswith("utility kept: accuracy ratio ") and retrained["utility"]["ratio"] > 0.8
    assert "utility" not in retrained["failed"]
    part = destroyed["utility"]
    assert part["config"]["shapes"] == ["square", "triangle", "diamond", "cross", "ring"] and part["config"]["n"] == 4
    assert [s["label"] for s in part["settings"]] == ["ddim g4.0 25 steps"] and part["metric"] == "shape-accuracy"
    # the base was measured once: both parts hold the same base scores
    assert [s["base_mean"] for s in part["settings"]] == [s["base_mean"] for s in retrained["utility"]["settings"]]
    assert "1 of 2 checkpoint(s) lost utility (the erasure broke what the model should keep): checkpoint-1" \
        in report["reasons"]
    assert "utility" in report["failed"]
    assert "gate: FAIL (" in stdout and "utility lost)" in stdout
    line = next(x for x in stdout.splitlines() if x.startswith("checkpoint-1: ") and " -> " in x)
    assert f"utility ratio {part['ratio']:.3f} (worst of 1: ddim g4.0 25 steps) -> FAIL" in line


def test_resume_measures_nothing_and_min_utility_decides(world, gated, tmp_path, capsys, monkeypatch):
    import unlearn_guard.gate.runner as runner
    import unlearn_guard.gate.utility as gate_utility

    _, _, report, first = gated
    out = shutil.copytree(first, tmp_path / "out")
    monkeypatch.setattr(gate_utility, "measure_utility", lambda *a, **k: pytest.fail("measured the base again"))
    monkeypatch.setattr(gate_utility, "utility_check", lambda *a, **k: pytest.fail("measured a checkpoint again"))
    monkeypatch.setattr(runner, "load_checkpoint_model", lambda *a, **k: pytest.fail("loaded a model"))
    ratios = [c["utility"]["ratio"] for c in report["checkpoints"]]
    for bar, passed in ((f"{ratios[0]:.17g}", [True, True]), (f"{ratios[0] + 1e-3:.17g}", [False, True]),
                        ("0", [True, True])):
        code, stdout, _ = run_cli(gate_argv(world, out, "--checkpoints", str(world / "checkpoints"), "--attacks",
                                            "memory,utility", *UTILITY, "--resume", "--max-memory", "1",
                                            "--min-utility", bar, "--json"), capsys)
        verdict = json_line(stdout)
        again = json.loads((out / "gate.json").read_text())
        assert [c["from_cache"] for c in again["checkpoints"]] == [True, True]
        for record, before in zip(again["checkpoints"], report["checkpoints"]):
            assert {k: v for k, v in record["utility"].items() if k != "cache_key"} == before["utility"]
        assert [c["passed"] for c in verdict["checkpoints"]] == passed and code == (0 if all(passed) else 1)
        assert verdict["checkpoints"][0]["utility"]["ratio"] == ratios[0]
    assert "not checked (--min-utility 0 turns the rule off)" in again["checkpoints"][0]["reasons"][-1]


def test_the_report_shows_the_utility(gated):
    _, _, report, out = gated
    html = (out / "report.html").read_text()
    assert "FAIL &mdash; utility lost" in html or "FAIL &mdash; still remembers; utility lost" in html
    assert "<h3>Utility (against the base model)</h3>" in html and "<th>utility ratio</th>" in html
    assert "min utility 0.550 (worst-case ratio to the base model)" in html
    assert html.count("ddim g4.0 25 steps") >= 4  # the summary table and each section, per checkpoint


def test_the_clip_score_path_runs_through_the_gate(world, tmp_path, capsys):
    """--utility-prompts with a tiny random CLIP (the wiring, not a verdict worth reading): the base
    against itself keeps ratio 1."""
    from unlearn_guard.models.tiny import save_tiny_clip

    clip = save_tiny_clip(tmp_path / "clip")
    (tmp_path / "prompts.txt").write_text("a square\n\na red ring\n")
    code, stdout, _ = run_cli(gate_argv(world, tmp_path / "out", "--attacks", "utility", "--utility-prompts",
                                        str(tmp_path / "prompts.txt"), "--utility-clip-model", str(clip),
                                        "--utility-n", "2", "--utility-settings", "ddim:4:10", "--json"), capsys)
    record = json.loads((tmp_path / "out" / "gate.json").read_text())["checkpoints"][0]
    assert record["utility"]["metric"] == "clip-score" and record["utility"]["config"]["prompts"] == ["a square",
                                                                                                      "a red ring"]
    assert record["utility"]["ratio"] == 1.0 and record["passed"] and code == 0
    assert record["reasons"] == [record["reasons"][0]] and record["reasons"][0].startswith("utility kept: CLIP score")
    assert json_line(stdout)["thresholds"]["min_utility"] == 0.9  # DEFAULT_MIN_RATIO_CLIP


@pytest.mark.parametrize("extra, message", [
    (["--attacks", "utility"], "--attacks utility needs --utility-erased SHAPE"),
    (["--attacks", "utility", "--utility-erased", "circle", "--utility-prompts", "p.txt"],
     "--utility-erased and --utility-prompts: pass one"),
    (["--attacks", "utility", "--utility-prompts", "nowhere.txt"],
     "--utility-prompts: prompts file 'nowhere.txt' does not exist"),
    (["--attacks", "utility", "--utility-erased", "circle", "--utility-n", "0"], "--utility-n: got 0"),
    (["--attacks", "utility", "--utility-erased", "circle", "--utility-settings", "ddim:4"],
     "--utility-settings"),
    (["--attacks", "utility", "--utility-erased", "circle", "--min-utility", "1.5"],
     "--min-utility: got '1.5'; expected a number in [0, 1]"),
    (["--attacks", "utility", "--utility-erased", "circle", "--model", "{pipeline}"],
     "--utility-erased: the kept shapes' accuracy is the shipped world's check"),
])
def test_bad_utility_arguments_are_one_error_line_before_any_compute(world, tmp_path, capsys, monkeypatch,
                                                                      extra, message):
    import unlearn_guard.gate.runner as runner
    from unlearn_guard.world import WEIGHTS_DIR

    monkeypatch.setattr(runner, "load_checkpoint_model", lambda *a, **k: pytest.fail("loaded a model first"))
    extra = [x.format(pipeline=WEIGHTS_DIR / "pipeline") for x in extra]
    code, _, err = run_cli(gate_argv(world, tmp_path / "bad", *extra), capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and message in errors[0] and "Traceback" not in err, err


# --------------------------------------------------------------------------- the rule on its own
def _utility_part(checkpoint_mean: float, base_mean: float = 0.9) -> dict:
    from unlearn_guard.sampling import DEFAULT_SETTING
    from unlearn_guard.utility import ItemScore, SettingUtility, UtilityConfig, UtilityResult

    config = UtilityConfig(shapes=("square",), n=10, settings=(DEFAULT_SETTING,))

    def score(value):
        return ItemScore("square", value, 10, round(value * 10), 0.0, 1.0)

    setting = SettingUtility(DEFAULT_SETTING, [score(checkpoint_mean)], [score(base_mean)],
                             score(checkpoint_mean), score(base_mean))
    return UtilityResult(config, [setting]).to_dict()


@pytest.mark.parametrize("memory_high, checkpoint_mean, verdict, failed, forgotten", [
    (0.2, 0.9, "pass", [], True),             # forgot, kept its utility: forgotten
    (0.2, 0.1, "fail", ["utility"], False),   # below the bar only because it is broken: not "forgotten"
    (0.9, 0.1, "fail", ["memory", "utility"], False),
    (0.9, 0.9, "fail", ["memory"], False),
])
def test_a_broken_model_is_never_called_forgotten(memory_high, checkpoint_mean, verdict, failed, forgotten):
    from unlearn_guard.gate.decision import Thresholds, decide, failure_label, overall

    record = {"attacks": ["memory", "utility"], "memory": {"value": memory_high / 2, "ci_low": 0.0, "ci_high": memory_high},
              "psnr_mean": 30.0, "utility": _utility_part(checkpoint_mean)}
    decision = decide(record, Thresholds(max_memory=0.5, min_utility=0.55))
    assert decision.verdict == verdict and list(decision.failed) == failed
    assert ("forgotten like a model that never saw it" in decision.reasons[0]) is forgotten
    assert decision.reasons[1].startswith("utility kept" if checkpoint_mean > 0.5 else "utility lost")
    gate = overall({"c": decision})
    if failed:
        assert failure_label(gate.failed) == {("utility",): "utility lost", ("memory",): "still remembers"}.get(
            tuple(failed), "still remembers; utility lost")
        assert any("lost utility" in r for r in gate.reasons) is ("utility" in failed)
        assert any("still remember" in r for r in gate.reasons) is ("memory" in failed)
