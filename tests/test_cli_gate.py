"""`unlearn-guard gate | probe | report` on the shipped small world: verdicts, exit codes, bad input.

Exit codes: 0 every checkpoint passes, 1 at least one still remembers, 2 bad usage or input
(one `error:` line on stderr, no traceback), 3 the probe itself failed.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from _gate_helpers import CHEAP, gate_args, json_line, run_cli, world_inputs

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Concept/reference folders (4 + 4 images) and ESD-LoRA adapters after 10 and 20 iterations."""
    return world_inputs(tmp_path_factory.mktemp("world"))


def _single_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


# --------------------------------------------------------------------------- verdicts (exit 0 / 1)
def test_gate_verdicts_follow_the_probe_numbers_before_and_after_esd(world, tmp_path, capsys):
    """Gate the shipped model before erasure and the ESD-LoRA checkpoints after it; the verdicts must be
    what the thresholds, applied to the conservative ends of the probe's own intervals, imply."""
    fast = ["--preset", "fast", "--quiet", "--json", "--thumbnails", "2"]
    # 1. measure with the default (calibrated) threshold: exit 0 or 1, the numbers are what count
    code, out, _ = run_cli(gate_args(world, tmp_path / "before", *fast), capsys)
    before = json_line(out)
    assert code == before["exit_code"] in (0, 1)
    code, out, _ = run_cli(gate_args(world, tmp_path / "after", "--checkpoints", str(world / "checkpoints"), *fast), capsys)
    after = json_line(out)
    assert code == after["exit_code"] and [c["name"] for c in after["checkpoints"]] == ["checkpoint-10", "checkpoint-20"]
    assert [c["step"] for c in after["checkpoints"]] == [10, 20]
    checkpoints = before["checkpoints"] + after["checkpoints"]
    uppers = [c["memory"]["ci_high"] for c in checkpoints]
    d_lows = [c["ci_low"] for c in checkpoints]
    with capsys.disabled():  # the measured numbers, for the log (pytest -s)
        print(f"\nmeasured: memory {[(round(c['memory']['value'], 3), round(c['memory']['ci_high'], 3)) for c in checkpoints]}, "
              f"d_N {[round(c['d_n'], 4) for c in checkpoints]}, PSNR {[round(c['psnr_mean'], 2) for c in checkpoints]}")
    assert d_lows[0] != d_lows[-1], "ESD changed nothing: the test cannot separate the verdicts"
    # the gate's numbers are the probe's: the API on the same model, images and preset agrees
    from unlearn_guard import load_model, probe
    from unlearn_guard.world import WEIGHTS_DIR

    direct = probe(load_model(WEIGHTS_DIR / "pipeline", lora=world / "checkpoints" / "checkpoint-20"),
                   world / "concept", reference=world / "reference", config="fast", progress=False)
    assert direct.d_n == pytest.approx(after["checkpoints"][-1]["d_n"], rel=1e-9, abs=0)
    assert direct.memory.value == pytest.approx(after["checkpoints"][-1]["memory"]["value"], rel=1e-9, abs=1e-12)
    assert direct.memory.ci_high == pytest.approx(uppers[-1], rel=1e-9, abs=1e-12)
    assert float(direct.erased.psnr.mean()) == pytest.approx(after["checkpoints"][-1]["psnr_mean"], rel=1e-9)

    def gate(*thresholds):
        verdicts = []
        for name, extra in (("before", []), ("after", ["--checkpoints", str(world / "checkpoints")])):
            code, out, err = run_cli(gate_args(world, tmp_path / name, *extra, *thresholds, "--resume", *fast), capsys)
            verdict = json_line(out)
            assert all(c["from_cache"] for c in verdict["checkpoints"])
            assert code == (0 if verdict["passed"] else 1) == verdict["exit_code"]
            verdicts += [c["passed"] for c in verdict["checkpoints"]]
        return verdicts

    # 2. the memory score decides on the upper end of its interval
    for max_memory in sorted(set(uppers) | {0.5, 1.0}):
        assert gate("--max-memory", repr(max_memory)) == [u <= max_memory for u in uppers], max_memory
    # 3. --min-dn adds d_N's lower end: a threshold between the two models' lower ends splits them
    min_dn = (d_lows[0] + d_lows[-1]) / 2
    expected = [low >= min_dn for low in d_lows]
    assert gate("--max-memory", "1", "--min-dn", repr(min_dn)) == expected
    # 4. --max-psnr: a checkpoint passes only when every rule holds
    psnrs = [c["psnr_mean"] for c in checkpoints]
    max_psnr = (psnrs[0] + psnrs[-1]) / 2 if psnrs[0] != psnrs[-1] else psnrs[0]
    expected = [p <= max_psnr for p in psnrs]
    assert gate("--max-memory", "1", "--max-psnr", repr(max_psnr)) == expected

    # 5. the written report agrees with the printed verdict and ties it to its inputs
    report = json.loads((tmp_path / "after" / "gate.json").read_text())
    assert report["thresholds"]["max_psnr"] == pytest.approx(max_psnr) and report["thresholds"]["max_memory"] == 1.0
    assert "upper end" in report["thresholds"]["rule"]
    assert len(report["inputs"]["concept_images"]["images"]) == 4
    assert all(len(image["sha256"]) == 64 for image in report["inputs"]["reference_images"]["images"])
    first = report["checkpoints"][0]
    assert all(len(h) == 64 for h in first["weight_sha256"].values()) and first["weight_sha256"]
    assert first["distance_kind"] == "mofc" and first["ci_low"] <= first["d_n"] <= first["ci_high"]
    assert first["memory"]["ci_low"] <= first["memory"]["value"] <= first["memory"]["ci_high"]
    assert any(reason.startswith("memory M = ") for reason in first["reasons"])
    assert len(first["probe"]["erased"]["images"]) == 4 and "nll" in first["probe"]["erased"]["images"][0]
    assert report["config"]["preset"] == "fast" and report["seed"] == 0 and report["versions"]["torch"]
    assert len(first["thumbnails"]) == 2 and (tmp_path / "after" / "report.html").is_file()


def test_help_and_exit_code_documentation(capsys):
    code, out, _ = run_cli(["gate", "--help"], capsys)
    assert code == 0
    for text in ("--max-memory", "--min-dn", "--checkpoints", "--set KEY=VALUE", "exit codes:", "still remembers", "--resume"):
        assert text in out


# --------------------------------------------------------------------------- bad input (exit 2)
def _bad_folder(world, tmp_path, kind: str):
    """A copy of the concept folder broken in one way."""
    folder = tmp_path / kind
    if kind == "missing":
        return folder
    shutil.copytree(world / "concept", folder)
    csv_path = folder / "prompts.csv"
    if kind == "empty":
        shutil.rmtree(folder)
        folder.mkdir()
    elif kind == "no_prompts_csv":
        csv_path.unlink()
    elif kind == "malformed_csv":
        csv_path.write_text("name;caption\ncircle_000.png;a circle\n")
    elif kind == "csv_names_missing_file":
        csv_path.write_text(csv_path.read_text() + "ghost.png,a circle\n")
    elif kind == "undecodable_image":
        (folder / "circle_000.png").write_bytes(b"this is not a png")
    return folder


@pytest.mark.parametrize("kind, message", [
    ("missing", "does not exist"),
    ("empty", "is empty"),
    ("no_prompts_csv", "prompts.csv' does not exist"),
    ("malformed_csv", "expected a header row"),
    ("csv_names_missing_file", "ghost.png"),
    ("undecodable_image", "cannot be read"),
])
def test_bad_image_folders_exit_2_with_the_problem_named(world, tmp_path, capsys, kind, message):
    folder = _bad_folder(world, tmp_path, kind)
    argv = gate_args(world, tmp_path / "out", "--min-dn", "1.5", *CHEAP)
    argv[argv.index("--concept-images") + 1] = str(folder)
    code, out, err = run_cli(argv, capsys)
    line = _single_error_line(err)
    assert code == 2 and message in line and "--concept-images" in line, line
    assert not (tmp_path / "out" / "gate.json").exists()


@pytest.mark.parametrize("extra, message", [
    (["--min-dn", "0"], "--min-dn: got '0'; expected a positive number"),
    (["--min-dn", "-1"], "--min-dn: got '-1'"),
    (["--min-dn", "abc"], "--min-dn: got 'abc'"),
    (["--min-dn", "nan"], "--min-dn: got 'nan'"),
    (["--min-dn", "inf"], "--min-dn: got 'inf'"),
    (["--min-dn", "2", "--max-psnr", "-3"], "--max-psnr: got '-3'"),
    (["--max-memory", "0"], "--max-memory: got '0'; expected a number in (0, 1]"),
    (["--max-memory", "1.5"], "--max-memory: got '1.5'"),
    (["--min-dn", "2", "--preset", "mofcc"], "unknown preset 'mofcc'"),
    (["--min-dn", "2", "--device", "cuda:99"], "--device: 'cuda:99'"),
    (["--min-dn", "2", "--device", "toaster"], "--device: 'toaster' is not a device name"),
    (["--min-dn", "2", "--set", "inversion.num_stepz=3"], "InversionConfig has no field 'num_stepz'"),
    (["--min-dn", "2", "--set", "inversion.num_steps=many"], "--set inversion.num_steps=many: expected an int"),
    (["--min-dn", "2", "--set", "inversion.num_steps=0"], "'num_steps'"),
    (["--min-dn", "2", "--set", "distance=emd"], "--set distance=emd: expected 'mofc' | 'w1'"),
    (["--min-dn", "2", "--set", "novalue"], "expected key=value"),
    (["--min-dn", "2", "--batch-size", "0"], "--batch-size"),
    (["--min-dn", "2", "--resume", "--overwrite"], "--resume and --overwrite"),
    (["--min-dn", "2", "--lora", "/no/such/adapter"], "--lora: '/no/such/adapter' does not exist"),
    (["--min-dn", "2", "--unet-weights", "/no/such.pt"], "--unet-weights: '/no/such.pt' does not exist"),
    (["--min-dn", "2", "--model", "/no/such/pipeline"], "folder '/no/such/pipeline' does not exist"),
])
def test_bad_arguments_exit_2_with_the_problem_named(world, tmp_path, capsys, extra, message):
    code, out, err = run_cli(gate_args(world, tmp_path / "out", *CHEAP, *extra), capsys)
    line = _single_error_line(err)
    assert code == 2 and message in line, line


@pytest.mark.parametrize("argv", [
    ["gate", "--model", "shapes-world"],                   # required arguments missing
    ["gate", "--no-such-flag"],
    ["frobnicate"],
])
def test_usage_errors_exit_2(argv, capsys):
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "error:" in err


def test_json_mode_reports_errors_as_json(world, tmp_path, capsys):
    code, out, err = run_cli(gate_args(world, tmp_path / "out", *CHEAP, "--json", "--min-dn", "-2"), capsys)
    assert code == 2 and json_line(out) == {"verdict": "error", "exit_code": 2,
                                            "error": "--min-dn: got '-2'; expected a positive number"}


def test_weights_that_do_not_fit_the_model_exit_2(world, tmp_path, capsys):
    from unlearn_guard.world import load_world_pipeline

    # a UNet state dict with a renamed key and a wrong shape
    state = {k: v.clone() for k, v in load_world_pipeline().unet.state_dict().items()}
    key = next(k for k in state if k.endswith("conv_in.weight"))
    state["renamed." + key] = state.pop(key)
    bad_unet = tmp_path / "bad_unet.safetensors"
    save_file(state, str(bad_unet))
    code, _, err = run_cli(gate_args(world, tmp_path / "out1", *CHEAP, "--min-dn", "2", "--unet-weights", str(bad_unet)),
                           capsys)
    line = _single_error_line(err)
    assert code == 2 and "bad_unet.safetensors" in line and "renamed." in line, line

    # a LoRA adapter trained for another architecture (the random tiny SD in tests/conftest.py)
    from unlearn_guard.models import DiffusionModel
    from unlearn_guard.models.tiny import build_tiny_components
    from unlearn_guard.trainers import ESDConfig, esd_lora_erase, save_esd_adapter

    tiny = DiffusionModel.from_components(**build_tiny_components(seed=0))
    esd_lora_erase(tiny, ESDConfig(concept="a circle", iterations=1, ddim_steps=2), progress=False)
    save_esd_adapter(tiny, tmp_path / "tiny_lora")
    code, _, err = run_cli(gate_args(world, tmp_path / "out2", *CHEAP, "--min-dn", "2", "--lora", str(tmp_path / "tiny_lora")),
                           capsys)
    line = _single_error_line(err)
    assert code == 2 and "does not match this UNet" in line and "tiny_lora" in line, line


@pytest.mark.parametrize("layout, message", [
    ("no_checkpoints", "has no checkpoint-<step>/ folders"),
    ("empty_checkpoint", "holds no erased weights"),
    ("two_weight_files", "holds 2 weight files"),
])
def test_bad_checkpoint_folders_exit_2(world, tmp_path, capsys, layout, message):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    if layout == "empty_checkpoint":
        (folder / "checkpoint-5").mkdir()
        (folder / "checkpoint-5" / "optimizer.bin").write_bytes(b"x")  # accelerate state is not weights
    elif layout == "two_weight_files":
        (folder / "checkpoint-5").mkdir()
        for name in ("a.safetensors", "b.pt"):
            (folder / "checkpoint-5" / name).write_bytes(b"x")
    code, _, err = run_cli(gate_args(world, tmp_path / "out", *CHEAP, "--min-dn", "2", "--checkpoints", str(folder)), capsys)
    line = _single_error_line(err)
    assert code == 2 and message in line, line


def test_too_few_reference_images_exit_2(world, tmp_path, capsys):
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(world / "reference" / "other_000.png", folder)
    (folder / "prompts.csv").write_text("file,prompt\nother_000.png,a square\n")
    argv = gate_args(world, tmp_path / "out", *CHEAP, "--min-dn", "2")
    argv[argv.index("--reference-images") + 1] = str(folder)
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "needs at least 2" in _single_error_line(err)


# --------------------------------------------------------------------------- non-finite weights (exit 2)
def test_non_finite_weights_are_named_with_exit_2_before_any_probe(world, tmp_path, capsys, monkeypatch):
    """NaN in the weights is the weights' fault (bad input), named by file and tensor; the images are
    never blamed and nothing is probed."""
    import unlearn_guard.gate.runner as runner
    from unlearn_guard.world import load_world_pipeline

    state = {k: v.clone() for k, v in load_world_pipeline().unet.state_dict().items()}
    key = next(k for k in state if k.endswith("conv_out.weight"))
    state[key] = torch.full_like(state[key], math.nan)
    nan_unet = tmp_path / "nan_unet.safetensors"
    save_file(state, str(nan_unet))
    monkeypatch.setattr(runner, "probe", lambda *a, **k: pytest.fail("probed a model with NaN weights"))
    code, out, err = run_cli(gate_args(world, tmp_path / "out", *CHEAP, "--json", "--min-dn", "2",
                                       "--unet-weights", str(nan_unet)), capsys)
    line = _single_error_line(err)
    assert code == 2 and "nan_unet.safetensors" in line and f"'{key}'" in line and "NaN" in line, line
    assert "latent" not in line and "image" not in line, line
    assert json_line(out)["exit_code"] == 2


# --------------------------------------------------------------------------- probe failures (exit 3)
@pytest.mark.parametrize("raised", [RuntimeError("CUDA error: an illegal memory access"), "probe_failure"])
def test_crashes_inside_the_probe_exit_3(world, tmp_path, capsys, monkeypatch, raised):
    import unlearn_guard.gate.runner as runner
    from unlearn_guard.probe import ProbeFailure

    def broken_probe(*args, **kwargs):
        raise ProbeFailure("out of memory at batch size 1 (image index 0)") if raised == "probe_failure" else raised

    monkeypatch.setattr(runner, "probe", broken_probe)
    code, _, err = run_cli(gate_args(world, tmp_path / "out", *CHEAP, "--min-dn", "2"), capsys)
    line = _single_error_line(err)
    assert code == 3 and ("illegal memory access" in line or "out of memory" in line), line


# --------------------------------------------------------------------------- output folder, cache, resume
def test_existing_report_is_not_overwritten_silently(world, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, _ = run_cli(gate_args(world, out, *CHEAP, "--max-memory", "1"), capsys)
    assert code == 0
    before = (out / "gate.json").read_text()
    code, _, err = run_cli(gate_args(world, out, *CHEAP, "--max-memory", "1"), capsys)
    line = _single_error_line(err)
    assert code == 2 and "already holds a gate report" in line and "--resume" in line and "--overwrite" in line
    assert (out / "gate.json").read_text() == before
    code, out_text, _ = run_cli(gate_args(world, out, *CHEAP, "--min-dn", "1e9", "--overwrite", "--json"), capsys)
    assert code == 1 and json_line(out_text)["checkpoints"][0]["from_cache"] is False
    assert json.loads((out / "gate.json").read_text())["thresholds"]["min_d_n"] == 1e9


def test_interrupted_gate_resumes_from_the_cache_and_says_so(world, tmp_path, capsys, monkeypatch):
    import unlearn_guard.gate.runner as runner

    real_probe = runner.probe
    calls = []

    def interrupted_after_one(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_probe(*args, **kwargs)

    monkeypatch.setattr(runner, "probe", interrupted_after_one)
    out = tmp_path / "out"
    argv = gate_args(world, out, *CHEAP, "--max-memory", "1", "--checkpoints", str(world / "checkpoints"))
    code, _, err = run_cli(argv, capsys)
    assert code == 130 and "--resume" in err
    assert not (out / "gate.json").exists() and len(list((out / "cache").glob("*.json"))) == 1
    assert not list((out / "cache").glob(".*.tmp"))  # nothing half-written

    code, _, err = run_cli(argv, capsys)  # without --resume: refused, the cache is named
    assert code == 2 and "1 cached checkpoint results" in err

    calls.clear()
    monkeypatch.setattr(runner, "probe", real_probe)
    counted = []
    monkeypatch.setattr(runner, "probe", lambda *a, **k: counted.append(1) or real_probe(*a, **k))
    code, out_text, err = run_cli([*argv, "--resume"], capsys)
    assert code == 0 and "resumed 1 of 2 checkpoints from cache" in out_text + err
    assert len(counted) == 1  # only the unfinished checkpoint was probed
    report = json.loads((out / "gate.json").read_text())
    assert [c["from_cache"] for c in report["checkpoints"]] == [True, False]
    assert report["resumed_from_cache"] == 1


def test_changed_inputs_are_not_taken_from_the_cache(world, tmp_path, capsys):
    out = tmp_path / "out"
    base = gate_args(world, out, *CHEAP, "--max-memory", "1", "--json")
    assert run_cli(base, capsys)[0] == 0
    code, text, _ = run_cli([*base, "--resume", "--seed", "1"], capsys)  # another seed: another key
    assert code == 0 and json_line(text)["checkpoints"][0]["from_cache"] is False
    code, text, _ = run_cli([*base, "--resume", "--seed", "1"], capsys)
    assert json_line(text)["checkpoints"][0]["from_cache"] is True


def test_a_gate_of_other_concept_images_resumes_the_reference_sets_probe(world, tmp_path, capsys):
    """With --resume, a gate of other concept images against the same reference images, model, weights
    and config takes R's own probe from OUTPUT/cache/sets/ and inverts only its own sets; its report
    holds the numbers of a gate that inverted R itself. Without --resume nothing is taken."""
    from unlearn_guard.gate.folders import save_image_folder
    from unlearn_guard.world.evaluate import out_of_world_images

    stars = tmp_path / "stars"
    save_image_folder(stars, *out_of_world_images("star", 4, seed=1), prefix="star")

    def gate(concept, output, *extra):
        argv = ["gate", "--model", "shapes-world", "--concept-images", str(concept), "--reference-images",
                str(world / "reference"), "--output", str(output), *CHEAP, "--max-memory", "1", "--json", *extra]
        code, out, err = run_cli(argv, capsys)
        assert "Traceback" not in err and json_line(out)["exit_code"] == code, err
        return code, json.loads((output / "gate.json").read_text())["checkpoints"][0]

    shared = tmp_path / "shared"
    _, circles = gate(world / "concept", shared)
    assert circles["reference_set"]["from_cache"] is False
    assert len(list((shared / "cache" / "sets").glob("*.json"))) == 1
    assert len(list((shared / "cache").glob("*.json"))) == 1  # checkpoint results: the set is not one of them
    code, resumed = gate(stars, shared, "--resume")
    alone_code, alone = gate(stars, tmp_path / "alone")
    assert resumed["reference_set"] == {**alone["reference_set"], "from_cache": True}  # the same key, found
    assert resumed["from_cache"] is False and resumed["cache_key"] == alone["cache_key"]  # E's part was probed
    assert resumed["reference_set"]["cache_key"] == circles["reference_set"]["cache_key"]
    assert code == alone_code
    for key in ("memory", "control_memory", "d_n", "ci_low", "ci_high", "notes", "verdict", "reasons", "normal_nll",
                "thumbnails", "diverged", "psnr_mean", "nll_mean"):
        assert resumed[key] == alone[key], key
    for part in ("erased", "reference", "control"):
        assert resumed["probe"][part]["images"] == alone["probe"][part]["images"], part
        assert resumed["probe"][part]["summary"]["unet_evaluations"] == alone["probe"][part]["summary"]["unet_evaluations"]
    assert resumed["probe"]["reference"]["summary"]["seconds"] == circles["probe"]["reference"]["summary"]["seconds"]
    # without --resume the cache is not read; another reference prompt is another key
    _, again = gate(stars, shared, "--overwrite")
    assert again["reference_set"]["from_cache"] is False
    shutil.copytree(world / "reference", tmp_path / "renamed")
    prompts = tmp_path / "renamed" / "prompts.csv"
    prompts.write_text(prompts.read_text().replace("a square", "a big square"))
    run_cli(["gate", "--model", "shapes-world", "--concept-images", str(stars), "--reference-images",
             str(tmp_path / "renamed"), "--output", str(shared), *CHEAP, "--max-memory", "1", "--resume"], capsys)
    assert json.loads((shared / "gate.json").read_text())["checkpoints"][0]["reference_set"]["from_cache"] is False


# --------------------------------------------------------------------------- probe and report commands
def test_probe_command_and_report_rerender(world, tmp_path, capsys):
    result = tmp_path / "probe.json"
    code, out, _ = run_cli(["probe", "--model", "shapes-world", "--lora", str(world / "checkpoints" / "checkpoint-20"),
                            "--concept-images", str(world / "concept"), "--reference-images", str(world / "reference"),
                            "--output", str(result), *CHEAP, "--json"], capsys)
    printed = json_line(out)
    assert code == 0 and printed["output"] == str(result) and printed["preset"] == "custom"
    saved = json.loads(result.read_text())
    assert saved["memory_distance"]["value"] == printed["d_n"] and len(saved["erased"]["images"]) == 4
    assert saved["config"]["inversion"]["num_steps"] == 3 and saved["weight_sha256"]

    code, out, _ = run_cli(["report", str(result), "--output", str(tmp_path / "probe.html")], capsys)
    assert code == 0 and "NO VERDICT" in (tmp_path / "probe.html").read_text()
    code, _, err = run_cli(["report", str(result), "--output", str(tmp_path / "probe.html")], capsys)
    assert code == 2 and "already exists" in _single_error_line(err)

    gate_out = tmp_path / "gate"
    assert run_cli(gate_args(world, gate_out, *CHEAP, "--min-dn", "1e9"), capsys)[0] == 1
    code, out, _ = run_cli(["report", str(gate_out / "gate.json"), "--output", str(tmp_path / "again.html")], capsys)
    html = (tmp_path / "again.html").read_text()
    assert code == 0 and "FAIL &mdash; still remembers" in html and str(tmp_path / "again.html") in out

    (tmp_path / "broken.json").write_text("{not json")
    code, _, err = run_cli(["report", str(tmp_path / "broken.json")], capsys)
    assert code == 2 and "is not readable JSON" in _single_error_line(err)
    (tmp_path / "other.json").write_text('{"a": 1}')
    code, _, err = run_cli(["report", str(tmp_path / "other.json")], capsys)
    assert code == 2 and "neither a gate report" in _single_error_line(err)


def test_quiet_mode_prints_only_the_verdict_and_paths(world, tmp_path, capsys):
    loud = [a for a in CHEAP if a != "--quiet"]
    code, out, err = run_cli(gate_args(world, tmp_path / "loud", *loud, "--max-memory", "1"), capsys)
    assert code == 0 and "probe erased" in err and "%|" in err  # progress bars per image set (negative control)
    assert "base: memory M = " in out and ", d_N = " in out
    code, out, err = run_cli(gate_args(world, tmp_path / "quiet", *CHEAP, "--max-memory", "1"), capsys)
    assert code == 0 and "%|" not in err and "probe erased" not in err
    assert out.splitlines() == ["gate: PASS: all 1 checkpoint(s) passed",
                                f"wrote {tmp_path / 'quiet' / 'gate.json'} and {tmp_path / 'quiet' / 'report.html'}"]


def test_a_folder_that_is_no_pipeline_exits_2_before_anything_is_hashed(world, tmp_path, capsys):
    (tmp_path / "not_a_model").mkdir()
    (tmp_path / "not_a_model" / "big.bin").write_bytes(b"x" * 1000)
    argv = gate_args(world, tmp_path / "out", *CHEAP, "--min-dn", "2")
    argv[argv.index("--model") + 1] = str(tmp_path / "not_a_model")
    code, _, err = run_cli(argv, capsys)
    line = _single_error_line(err)
    assert code == 2 and "has no model_index.json" in line, line


def test_every_weight_form_is_gated_and_unchanged_weights_give_the_base_numbers(world, tmp_path, capsys):
    """Full UNet state dicts (.safetensors, .pt, a diffusers unet/ folder) and a text encoder folder, each
    holding the shipped model's own weights: the gate must load them and report exactly the base d_N."""
    from unlearn_guard.world import WEIGHTS_DIR

    pipeline = WEIGHTS_DIR / "pipeline"
    state = load_file(str(pipeline / "unet" / "diffusion_pytorch_model.safetensors"))
    checkpoints = tmp_path / "ckpts"
    shutil.copytree(pipeline / "unet", checkpoints / "checkpoint-1" / "unet")
    (checkpoints / "checkpoint-2").mkdir()
    save_file(state, str(checkpoints / "checkpoint-2" / "model.safetensors"))
    (checkpoints / "checkpoint-2" / "optimizer.bin").write_bytes(b"accelerate state, not weights")
    (checkpoints / "checkpoint-3").mkdir()
    torch.save(state, checkpoints / "checkpoint-3" / "unet.pt")
    shutil.copytree(pipeline / "text_encoder", checkpoints / "checkpoint-4" / "text_encoder")

    code, out, _ = run_cli(gate_args(world, tmp_path / "base", *CHEAP, "--json", "--max-memory", "1"), capsys)
    base = json_line(out)["checkpoints"][0]
    code, out, _ = run_cli(gate_args(world, tmp_path / "forms", *CHEAP, "--json", "--max-memory", "1",
                                     "--checkpoints", str(checkpoints)), capsys)
    gated = json_line(out)["checkpoints"]
    assert code == 0 and [c["step"] for c in gated] == [1, 2, 3, 4]
    for record in gated:
        assert record["d_n"] == base["d_n"] and record["psnr_mean"] == base["psnr_mean"], record["name"]
    report = json.loads((tmp_path / "forms" / "gate.json").read_text())
    kinds = [{k for k, v in c["weights"].items() if v} for c in report["checkpoints"]]
    assert kinds == [{"unet_weights"}, {"unet_weights"}, {"unet_weights"}, {"text_encoder"}]
    assert not any("optimizer.bin" in f for c in report["checkpoints"] for f in c["weight_sha256"])
