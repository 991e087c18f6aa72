"""The command line under hostile input and on a newcomer's first run, through the real console script.

Every test here that runs `unlearn-guard` runs `.venv/bin/unlearn-guard` in a subprocess, as a user
would (start-up, imports and exit code included). One "hostile but valid" gate run is shared by
several tests: a concept folder of mixed image sizes with one 5,000-character prompt, and a
checkpoints folder holding two identical adapters; each test reads its own part of that run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from _gate_helpers import CHEAP, gate_args, run_cli, world_inputs

torch.set_num_threads(1)

CONSOLE_SCRIPT = Path(sys.executable).parent / "unlearn-guard"
FAST = ["--preset", "fast", "--set", "inversion.num_steps=3", "--set", "bootstrap_samples=50", "--thumbnails", "2"]


def console(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`unlearn-guard ARGV` as a user runs it."""
    assert CONSOLE_SCRIPT.is_file(), f"{CONSOLE_SCRIPT} is missing: run scripts/env.sh"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(CONSOLE_SCRIPT), *argv], capture_output=True, text=True, timeout=timeout, env=env)


def error_line(stderr: str) -> str:
    """The one `error:` line, with no traceback around it."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Concept/reference folders (4 + 4 images of the small world) and LoRA adapters after 2 and 4 ESD steps."""
    return world_inputs(tmp_path_factory.mktemp("world"), images=4, save_at=(2, 4), ddim_steps=2)


@pytest.fixture(scope="module")
def hostile_run(world, tmp_path_factory):
    """One gate run over valid but awkward input, with --resume on a fresh output folder, not quiet."""
    root = tmp_path_factory.mktemp("hostile")
    concept = root / "concept"
    shutil.copytree(world / "concept", concept)
    Image.open(concept / "circle_003.png").resize((48, 40)).save(concept / "circle_003.png")  # 40x48, not 32x32
    rows = (concept / "prompts.csv").read_text().splitlines()
    rows[1] = rows[1].split(",")[0] + ",a circle" + " very" * 1000  # 5,008 characters
    (concept / "prompts.csv").write_text("\n".join(rows) + "\n")
    checkpoints = root / "checkpoints"
    shutil.copytree(world / "checkpoints", checkpoints)
    shutil.copytree(checkpoints / "checkpoint-2", checkpoints / "checkpoint-6")  # identical to checkpoint-2
    argv = gate_args(world, root / "out", "--checkpoints", str(checkpoints), "--max-memory", "1", "--resume", *FAST)
    argv[argv.index("--concept-images") + 1] = str(concept)
    done = console(*argv)
    return done, root / "out"


# --------------------------------------------------------------------------- 1. unwritable --output
@contextmanager
def _unwritable_folder(tmp_path: Path):
    """A folder nothing can be written to: a read-only tmpfs when mount is permitted, else chmod 555
    for a non-root user; as root without mount, a file where the folder should be (root ignores 555)."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0 if shutil.which("mount") else False
    try:
        if mounted:
            yield folder, "Read-only file system"
        elif os.geteuid() != 0:
            folder.chmod(0o555)
            yield folder, "Permission denied"
        else:
            folder.rmdir()
            folder.write_text("a file where the folder should be")
            yield folder, "is a file"
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)
        elif folder.is_dir():
            folder.chmod(0o755)


@pytest.mark.parametrize("where", ["read_only_folder", "file_in_the_way", "read_only_parent"])
def test_unwritable_output_exits_2_before_any_compute(world, tmp_path, capsys, where):
    """The issue's case (an existing read-only --output) and a file in the way run the console script;
    a read-only parent runs in-process (the same code path, 8 s of start-up less)."""
    with _unwritable_folder(tmp_path) as (read_only, reason):
        if where == "file_in_the_way":
            (tmp_path / "blocker").write_text("x")
            output, reason = tmp_path / "blocker" / "out", "is a file"
        else:
            output = read_only if where == "read_only_folder" else read_only / "sub" / "out"
        argv = gate_args(world, output, "--min-dn", "1.5", *FAST)  # not quiet: bars would show a probe
        if where == "read_only_parent":
            code, _, err = run_cli(argv, capsys)
        else:
            done = console(*argv)
            code, err = done.returncode, done.stderr
    line = error_line(err)
    assert code == 2 and line.startswith("error: --output:") and reason in line, err
    assert str(output) in line or str(tmp_path / "blocker") in line, line
    assert "probe erased" not in err and "OSError" not in err, err  # nothing was probed


def test_a_write_that_fails_later_is_one_line_and_keeps_the_finished_work(world, tmp_path, capsys):
    """report.html cannot be written (a folder holds its name): the probed result stays cached, and
    --resume then writes the report without probing again."""
    output = tmp_path / "out"
    (output / "report.html").mkdir(parents=True)
    argv = gate_args(world, output, *CHEAP, "--max-memory", "1", "--checkpoints", str(world / "checkpoints"))
    code, _, err = run_cli([*argv, "--overwrite"], capsys)
    line = error_line(err)
    assert code == 2 and f"could not write '{output / 'report.html'}'" in line and "--resume" in line, line
    assert "all 2 checkpoint result(s) are cached" in line and ".tmp" not in line
    assert len(list((output / "cache").glob("*.json"))) == 2
    (output / "report.html").rmdir()
    code, out, err = run_cli([*argv, "--resume"], capsys)
    assert code == 0 and "resumed 2 of 2 checkpoints from cache" in out + err
    assert (output / "report.html").is_file()


def test_the_api_says_unwritable_before_probing(world, tmp_path, monkeypatch):
    import unlearn_guard.gate.runner as runner
    from unlearn_guard.config import ProbeConfig
    from unlearn_guard.errors import OutputError
    from unlearn_guard.gate.checkpoints import Checkpoint, Weights
    from unlearn_guard.gate.decision import Thresholds

    monkeypatch.setattr(runner, "load_checkpoint_model", lambda *a, **k: pytest.fail("probed before checking the output"))
    (tmp_path / "blocker").write_text("x")
    config = runner.GateConfig(model="shapes-world", checkpoints=(Checkpoint("base", Weights()),),
                               concept_images=world / "concept", reference_images=world / "reference",
                               thresholds=Thresholds(min_d_n=1.0), probe=ProbeConfig.from_preset("fast"),
                               output=tmp_path / "blocker" / "gate", progress=False)
    with pytest.raises(OutputError, match=r"--output: .*blocker/gate' cannot be created: .*blocker' is a file"):
        runner.run_gate(config)


# --------------------------------------------------------------------------- 2. --resize
def test_mixed_sizes_are_resized_to_the_model_resolution(hostile_run):
    done, output = hostile_run
    assert done.returncode == 0, done.stderr
    assert ("warning: --concept-images: resized 1 of 4 images to 32x32 (HxW) with resize='resize' "
            "(bicubic, aspect ratio not preserved): circle_003.png (40x48)") in done.stderr.splitlines()
    report = json.loads((output / "gate.json").read_text())
    assert report["config"]["resize"] == "resize" and len(report["checkpoints"]) == 3


@pytest.mark.parametrize("policy", ["error", "center_crop"])
def test_the_resize_flag_sets_the_policy(world, tmp_path, policy, capsys):
    concept = tmp_path / "concept"
    shutil.copytree(world / "concept", concept)
    Image.open(concept / "circle_001.png").resize((64, 40)).save(concept / "circle_001.png")
    argv = gate_args(world, tmp_path / "out", "--max-memory", "1", "--resize", policy, *FAST, "--quiet")
    argv[argv.index("--concept-images") + 1] = str(concept)
    if policy == "error":
        done = console(*argv)
        line = error_line(done.stderr)
        assert done.returncode == 2 and "--concept-images: 1 of 4 images are not 32x32 (HxW)" in line, line
        assert "circle_001.png (40x64)" in line
    else:  # in-process: the policy reaches the probe config and the cache key
        code, _, err = run_cli(argv, capsys)
        assert code == 0 and "resize='center_crop' (center-cropped" in err
        assert json.loads((tmp_path / "out" / "gate.json").read_text())["config"]["resize"] == "center_crop"


# --------------------------------------------------------------------------- 3. NaN LoRA
def test_a_nan_lora_is_named_by_file_and_tensor_before_any_inversion(world, tmp_path):
    adapter = tmp_path / "nan_lora"
    shutil.copytree(world / "checkpoints" / "checkpoint-4", adapter)
    state = load_file(str(adapter / "pytorch_lora_weights.safetensors"))
    key = sorted(k for k in state if "lora_B" in k)[0]
    state[key] = torch.full_like(state[key], math.nan)
    save_file(state, str(adapter / "pytorch_lora_weights.safetensors"))
    done = console(*gate_args(world, tmp_path / "out", "--min-dn", "1.5", "--lora", str(adapter), *FAST))
    line = error_line(done.stderr)
    assert done.returncode == 2, done.stderr
    assert f"'{adapter / 'pytorch_lora_weights.safetensors'}'" in line and f"'{key}'" in line and "NaN" in line, line
    assert "latent" not in line and ".png" not in line and "probe erased" not in done.stderr, line


# --------------------------------------------------------------------------- 4. pickled weights
def test_pickled_weights_are_refused_in_one_line(world, tmp_path):
    marker = tmp_path / "payload_ran"

    class P:  # pickled as a call of os.mknod(marker): the class itself is not stored
        def __reduce__(self):
            return (os.mknod, (str(marker),))

    # Written here, not in a `python -c` child (8 s of imports): the file is the same pickle either way.
    torch.save({"conv_in.weight": torch.zeros(1), "x": P()}, str(tmp_path / "evil.pt"))
    assert b"mknod" in (tmp_path / "evil.pt").read_bytes() and not marker.exists()  # armed, not yet fired
    done = console(*gate_args(world, tmp_path / "out", "--min-dn", "1.5", "--unet-weights", str(tmp_path / "evil.pt"),
                              *FAST))
    line = error_line(done.stderr)
    assert done.returncode == 2 and not marker.exists()
    assert len(done.stderr.strip().splitlines()) == 1 and "\x1b" not in done.stderr, done.stderr
    assert "evil.pt" in line and "other than tensors" in line and "not loaded" in line and "safetensors" in line


# --------------------------------------------------------------------------- 5. Ctrl-C at start-up
def _default_sigint() -> None:
    """The child takes Ctrl-C as a terminal would deliver it, even when this test run itself was
    started in the background (where the shell sets SIGINT to ignored and children inherit that:
    measured, every Ctrl-C test then "failed" with the gate run to its end)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)



def test_ctrl_c_during_start_up_exits_130_with_one_line(world, tmp_path):
    """SIGINT while the console script is still importing torch and diffusers (libtorch mapped)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([str(CONSOLE_SCRIPT), *gate_args(world, tmp_path / "out", "--min-dn", "1.5", *FAST)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=_default_sigint)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        maps = Path(f"/proc/{process.pid}/maps").read_text()
        if "libtorch_cpu" in maps:
            break
        time.sleep(0.005)
    else:
        process.kill()
        pytest.fail("libtorch was never loaded")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err.strip() == "interrupted during start-up; nothing was run" and out == "", err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("delay", [0.3, 0.9, 1.5])
def test_ctrl_c_anywhere_in_the_imports_exits_130(world, tmp_path, delay):
    """SIGINT a little later, while numpy, diffusers and transformers import: measured before the
    fix, 0.8-1.0 s after libtorch loaded gave exit 1 (numpy left half imported: RecursionError or
    AttributeError), and under load an interrupt swallowed by a library's bare `except:` let the
    whole gate run. Each must still be an interrupt: 130, one line."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([str(CONSOLE_SCRIPT), *gate_args(world, tmp_path / "out", "--min-dn", "1.5", *FAST)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=_default_sigint)
    deadline = time.monotonic() + 60
    while "libtorch_cpu" not in Path(f"/proc/{process.pid}/maps").read_text():
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("libtorch was never loaded")
        time.sleep(0.005)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130, err[-3000:]
    assert len(err.strip().splitlines()) == 1 and err.strip().startswith("interrupted"), err[-3000:]


def test_ctrl_c_later_names_what_was_lost(capsys, monkeypatch):
    import unlearn_guard.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    parser = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with_handler(parser(), "report", interrupted))
    code, _, err = run_cli(["report", "x.json"], capsys)
    assert code == 130 and err.strip() == "interrupted; report did not finish"


def _with_handler(parser, command, handler):
    parser._subparsers._group_actions[0].choices[command].set_defaults(handler=handler)
    return parser


# --------------------------------------------------------------------------- 6. reused vs resumed
def test_identical_checkpoints_are_reused_not_resumed(hostile_run):
    done, output = hostile_run
    assert done.returncode == 0, done.stderr  # the shared run also resizes (item 2)
    text = done.stdout + done.stderr
    assert "checkpoint-6: memory M = " in text and "(reused the result of checkpoint-2: identical weights)" in text
    assert "reused this run's result for 1 checkpoint(s) with identical weights: checkpoint-6 (same as checkpoint-2)" in text
    assert "resumed 0 of 3 checkpoints from cache" in text  # a first run resumes nothing
    report = json.loads((output / "gate.json").read_text())
    assert [(c["name"], c["from_cache"], c["reused_from"]) for c in report["checkpoints"]] == [
        ("checkpoint-2", False, None), ("checkpoint-4", False, None), ("checkpoint-6", False, "checkpoint-2")]
    assert report["resumed_from_cache"] == 0 and report["reused_in_run"] == 1
    assert report["checkpoints"][2]["d_n"] == report["checkpoints"][0]["d_n"]
    assert len(list((output / "cache").glob("*.json"))) == 2  # probed twice, not three times


# --------------------------------------------------------------------------- 7. long prompts
def test_a_long_prompt_is_warned_about_once(hostile_run):
    done, _ = hostile_run
    assert done.returncode == 0, done.stderr  # the shared run also resizes (item 2)
    cut = [line for line in done.stderr.splitlines() if "longer than the tokenizer's limit" in line]
    assert len(cut) == 1, done.stderr  # once, although three checkpoints were gated (two probed)
    assert cut[0].startswith("warning: prompts: 1 of 8 prompts are longer than the tokenizer's limit of 12 tokens")
    assert "images circle_000.png (" in cut[0]


# --------------------------------------------------------------------------- 8. one-line warnings
def test_warnings_are_one_line_each(hostile_run):
    done, _ = hostile_run
    assert done.returncode == 0, done.stderr  # the shared run also resizes (item 2)
    lines = done.stderr.splitlines()
    warned = [line for line in lines if "warning" in line.lower()]
    assert len(warned) >= 2  # the resize and the long-prompt notes (a negative control for the next line)
    assert all(line.lstrip("\r ").startswith("warning: ") or "warning: " in line for line in warned), warned
    assert not any("UserWarning" in line or "warnings.warn(" in line for line in lines), done.stderr


# --------------------------------------------------------------------------- 10. quiet start-up, at the CLI only
def test_no_library_start_up_noise_in_the_cli(hostile_run):
    done, _ = hostile_run
    assert done.returncode == 0, done.stderr  # the shared run also resizes (item 2)
    assert "torchvision" not in done.stderr and "Loading pipeline components" not in done.stderr, done.stderr
    assert "Loading weights" not in done.stderr
    assert "probe erased" in done.stderr  # our own progress bars still show (not quiet)


_LIBRARY_STATE = """
import json, logging, sys, warnings
def state():
    import diffusers.utils.logging as dl, transformers.utils.logging as tl, torch
    names = ["transformers", "transformers.utils.import_utils", "diffusers"]
    return {"filters": repr(warnings.filters), "showwarning": repr(warnings.showwarning),
            "levels": [logging.getLogger(n).level for n in names],
            "log_filters": [len(logging.getLogger(n).filters) for n in names],
            "bars": [dl.is_progress_bar_enabled(), tl.is_progress_bar_enabled()], "threads": torch.get_num_threads()}
"""


def test_importing_unlearn_guard_leaves_the_users_warnings_and_logging_alone(tmp_path):
    """A user's own `import unlearn_guard` (and use) installs no warning filter, changes no logging
    level or handler filter, leaves progress bars and threads alone: transformers' torchvision note
    still reaches them. (Third-party imports may add filters of their own; those are not ours.)"""
    code = _LIBRARY_STATE + """
installers = []
for name in ("filterwarnings", "simplefilter"):
    def recording(*args, _real=getattr(warnings, name), **kwargs):
        installers.append(sys._getframe(1).f_code.co_filename)
        return _real(*args, **kwargs)
    setattr(warnings, name, recording)
before = state()
import unlearn_guard
from unlearn_guard import probe, load_model
import unlearn_guard.cli, unlearn_guard.gate.runner
from unlearn_guard.world import load_world_model
load_world_model()  # builds CLIPImageProcessor: transformers' own torchvision note must reach the user
assert probe.__module__ == "unlearn_guard.probe" and callable(probe)
ours = [f for f in installers if "/unlearn_guard/" in f]
print(json.dumps({"before": before, "after": state(), "ours": ours, "installers": len(installers)}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    states = json.loads(done.stdout.strip().splitlines()[-1])
    assert states["ours"] == [], states["ours"]
    before, after = states["before"], states["after"]
    assert {k: v for k, v in before.items() if k != "filters"} == {k: v for k, v in after.items() if k != "filters"}
    assert "requires torchvision" in done.stderr  # untouched for the user's own code


def test_the_cli_restores_what_it_changed_when_called_from_python(world, tmp_path, capsys):
    from unlearn_guard.cli import main

    namespace: dict = {}
    exec(_LIBRARY_STATE, namespace)
    before = namespace["state"]()
    warnings.simplefilter("default")  # a caller's own filter, to be kept
    before_filters = repr(warnings.filters)
    code = main(gate_args(world, tmp_path / "out", "--max-memory", "1", "--threads", "1", *FAST, "--quiet"))
    capsys.readouterr()
    assert code == 0
    after = namespace["state"]()
    assert repr(warnings.filters) == before_filters
    assert {k: v for k, v in after.items() if k != "filters"} == {k: v for k, v in before.items() if k != "filters"}
    assert not logging.getLogger("transformers.utils.import_utils").filters


def test_the_package_imports_without_torch():
    done = subprocess.run([sys.executable, "-c", "import sys, unlearn_guard, unlearn_guard.cli; "
                           "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


# --------------------------------------------------------------------------- 11. --threads
def test_threads_flag_sets_torchs_threads_for_the_command_only(world, tmp_path, capsys, monkeypatch):
    import unlearn_guard.gate.runner as runner

    seen = []
    real = runner.load_checkpoint_model
    monkeypatch.setattr(runner, "load_checkpoint_model",
                        lambda *a, **k: seen.append(torch.get_num_threads()) or real(*a, **k))
    torch.set_num_threads(1)
    code, _, _ = run_cli(gate_args(world, tmp_path / "out", *CHEAP, "--max-memory", "1", "--threads", "2"), capsys)
    assert code == 0 and seen == [2] and torch.get_num_threads() == 1
    for bad in ("0", "-3"):
        code, _, err = run_cli(gate_args(world, tmp_path / f"bad{bad}", *CHEAP, "--min-dn", "1", "--threads", bad),
                               capsys)
        assert code == 2 and f"--threads: got {int(bad)}; expected an int >= 1" in err.strip().splitlines()[-1]
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("cores, omp, expected", [(1, None, 1), (2, None, 1), (4, None, None), (16, None, None),
                                                  (2, "2", None)])
def test_default_threads_is_one_on_two_cores_unless_the_user_said(monkeypatch, cores, omp, expected):
    """benchmarks/threads_contention.py: on 2 shared cores one thread ran 8-20x faster than two."""
    import unlearn_guard.cli.runtime as cli

    monkeypatch.setattr(cli, "_usable_cores", lambda: cores)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    assert cli.default_threads() == expected


def test_an_interrupt_during_an_import_is_raised_when_the_outermost_import_ends():
    """Raised inside a C extension's initialisation, an interrupt aborted the process (exit -6, a
    full test run, triton's libtriton); so during an import it waits for the import to end."""
    import unlearn_guard.cli.runtime as cli

    steps = []

    def inner(*args, **kwargs):
        cli._on_sigint(signal.SIGINT, None)  # arrives mid-import: recorded, not raised here
        steps.append("inner import finished")

    guarded = cli._guarded_import(lambda *a, **k: (steps.append("outer starts"), guarded_inner("y"),
                                                   steps.append("outer import finished")))
    guarded_inner = cli._guarded_import(inner)
    try:
        with pytest.raises(KeyboardInterrupt):
            guarded("x")
        assert steps == ["outer starts", "inner import finished", "outer import finished"]
        assert cli._IMPORT_DEPTH[0] == 0 and not cli._DEFERRED and cli._SIGINT_SEEN == [signal.SIGINT]
        with pytest.raises(KeyboardInterrupt):  # outside an import: raised at once, as Python does
            cli._on_sigint(signal.SIGINT, None)
    finally:
        cli._SIGINT_SEEN.clear()
        cli._DEFERRED.clear()
