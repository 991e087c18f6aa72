"""Data-parallel probing, gating and monitoring on torch.distributed: 2 gloo ranks on CPU.

The multi-process cases start real processes (each costs ~10 s of imports on 2 busy cores), so
they are grouped: one 2-rank launch runs the probe, DDP and accelerate scenarios
(tests/helpers/distributed_workers.py), and the gate runs under torchrun and under a direct,
srun-like launch (RANK/WORLD_SIZE/MASTER_* set by hand), once with a rank killed mid-gate.
Every launch has a timeout, and every liveness timeout is seconds, so nothing here can hang.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from _gate_helpers import gate_args, image_folders, run_cli, world_inputs
from unlearn_guard import distributed as distributed_work
from unlearn_guard.errors import InputError

TESTS = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
# The gate's knobs in these tests: fast (10 steps, so the memory score is defined), 4 + 4 images.
GATE_KNOBS = ["--preset", "fast", "--set", "bootstrap_samples=50", "--thumbnails", "2", "--quiet", "--threads", "1"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    # The repository root first: the workers import this checkout's package (a worktree's too), not
    # whichever copy the venv's editable install points at; tests/ for the helpers.
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)]), **extra}


# --------------------------------------------------------------------------- no process group
@pytest.mark.parametrize("weights, world, expected", [
    ([1, 1, 1, 1], 2, [range(0, 2), range(2, 4)]),
    ([4, 1, 4], 2, [range(0, 1), range(1, 3)]),       # the partial chunk goes with its neighbour
    ([4, 4, 4, 4, 4], 2, [range(0, 2), range(2, 5)]),
    ([1, 1], 4, [range(0), range(0, 1), range(0), range(1, 2)]),  # fewer units than ranks: some idle
    ([2, 2, 2], 1, [range(0, 3)]),
])
def test_shards_are_contiguous_balanced_and_cover_every_unit_once(weights, world, expected):
    bounds = distributed_work.shard_bounds(weights, world)
    assert bounds == expected
    assert [i for part in bounds for i in part] == list(range(len(weights)))


def test_distributed_true_without_a_process_group_is_a_clear_error(tiny_model, tiny_images):
    from unlearn_guard.probe import probe

    with pytest.raises(InputError, match=r"distributed=True: no torch.distributed process group is initialised"):
        probe(tiny_model, tiny_images[:2], "p", config="fast", distributed=True)
    with pytest.raises(InputError, match=r"distributed: got 'yes'; expected True, False or None"):
        distributed_work.resolve("yes")
    assert distributed_work.resolve(None) is None and not distributed_work.would_shard(None)


@pytest.mark.parametrize("changes, message", [
    ({"dead_after_s": 0}, "'dead_after_s': got 0; expected a number of seconds > 0"),
    ({"heartbeat_s": 5.0, "dead_after_s": 6.0}, "expected at least twice heartbeat_s"),
    ({"patience": 3}, "unknown setting"),
])
def test_timeouts_validate_themselves(changes, message):
    before = distributed_work.configure()
    with pytest.raises(InputError, match=message):
        distributed_work.configure(**changes)
    assert distributed_work.configure() == before


# --------------------------------------------------------------------------- 2 ranks: probe, DDP, accelerate
@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Run every scenario of distributed_workers.py on 2 gloo ranks; {scenario: [rank 0, rank 1]}."""
    out = tmp_path_factory.mktemp("ranks")
    scenarios = ["probe", "ddp_monitor", "accelerate", "stalled"]
    port = free_port()
    command = ("from helpers.distributed_workers import run; "
               f"run({{rank}}, 2, {port}, {str(out)!r}, {scenarios!r})")
    procs = [subprocess.Popen([sys.executable, "-c", command.format(rank=rank)], env=environment(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in range(2)]
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and not (out / "stalled.rank0.done").exists():
            if procs[0].poll() is not None:
                break
            time.sleep(0.2)
    finally:
        procs[1].kill()  # it stalls on purpose in the last scenario
        procs[0].wait(timeout=max(1.0, deadline - time.monotonic()))
    logs = [proc.communicate()[0] for proc in procs]
    found = {}
    for name in scenarios:
        found[name] = []
        for rank in range(2):
            path = out / f"{name}.rank{rank}.pt"
            found[name].append(torch.load(path, weights_only=False) if path.exists() else None)
    found["out"], found["logs"] = out, logs
    return found


def _scenario(two_ranks, name):
    ranks = two_ranks[name]
    for rank, found in enumerate(ranks):
        assert found is not None, f"rank {rank} wrote no {name} result; its log:\n{two_ranks['logs'][rank][-3000:]}"
        assert "exception" not in found, f"rank {rank}, {name}:\n{found['exception']}"
    return ranks


def test_sharded_probe_equals_one_process_bitwise_on_every_rank(two_ranks):
    rank0, rank1 = _scenario(two_ranks, "probe")
    assert rank0["dict"] == rank1["dict"]  # the same ProbeResult on every rank, provenance included
    for shared, alone in ((rank0["shared"], rank0["alone"]), (rank0["auto"], rank0["auto_alone"])):
        for key in ("erased_nll", "erased_psnr", "reference_nll", "reference_psnr", "erased_seeds", "reference_seeds",
                    "erased_reconstructions", "normal"):
            assert torch.equal(shared[key], alone[key]), key  # bitwise, not close
        assert shared["d_n"] == alone["d_n"] and shared["memory"] == alone["memory"]  # values and intervals
        assert shared["evaluations"] == alone["evaluations"] and shared["notes"] == alone["notes"]
    assert rank0["shared"]["memory"] is not None
    # Negative control: other chunks move the numbers, so the bitwise match above is no accident.
    assert not torch.equal(rank0["batch_one"]["erased_seeds"], rank0["alone"]["erased_seeds"])
    record = rank0["dict"]["provenance"]["distributed"]
    assert record["world_size"] == 2 and record["backend"] == "gloo" and record["sharded"] and record["units"] == 9  # 5 of E and R, 4 of the negative control
    assert rank0["alone_provenance"] == {"world_size": 2, "backend": "gloo", "sharded": False}
    out = two_ranks["out"]
    assert (out / "probe_result.rank0.json").exists() and not (out / "probe_result.rank1.json").exists()


def test_ddp_monitor_probes_on_every_rank_and_decides_alike(two_ranks):
    rank0, rank1 = _scenario(two_ranks, "ddp_monitor")
    assert rank0["shards"] and rank1["shards"]
    assert rank0["checksum"] == rank1["checksum"]  # DDP kept the weights identical
    assert rank0["history"] == rank1["history"]  # records, failure included, minus each rank's own seconds
    assert rank0["steps"] == rank1["steps"]  # stop and weight after every step
    history = rank0["history"]
    assert [(r["step"], r["error"] is None) for r in history] == [(2, True), (4, False), (6, True)]
    assert history[1]["error"] == ("RankFailure: the probe: rank 1 of 2 failed: RuntimeError: out of memory "
                                   "(injected on rank 1)")
    assert rank0["failures"] == rank1["failures"] == 1
    assert rank0["steps"][-1][:2] == (6, True) and rank0["stop_reason"] == rank1["stop_reason"] == "patience"
    assert rank0["alone_d_n"] == history[0]["d_n"]  # what one process measures on the same weights


def test_accelerate_probe_shares_the_work_and_the_decision(two_ranks):
    rank0, rank1 = _scenario(two_ranks, "accelerate")
    assert rank0["num_processes"] == rank1["num_processes"] == 2 and "MULTI_CPU" in rank0["distributed_type"]
    assert rank0["history"] == rank1["history"] and rank0["steps"] == rank1["steps"]
    assert [r["step"] for r in rank0["history"]] == [2, 4] and all(r["error"] is None for r in rank0["history"])
    assert rank0["steps"][-1][:2] == (4, True)  # patience 1: the second probe stops both processes
    assert rank0["last_record_step"] == rank1["last_record_step"] == 4
    # the trackers live on the main process: one entry per probe, at its step
    assert [step for step, _ in rank0["logged"]] == [2, 4] and rank1["logged"] == []
    assert "circle/d_n" in rank0["logged"][0][1]


def test_a_rank_that_stops_answering_is_named_within_the_timeout(two_ranks):
    found = two_ranks["stalled"][0]
    assert found is not None and "exception" not in found, two_ranks["logs"][0][-3000:]
    assert found["ranks"] == [1] and found["exit_code"] == 3
    assert found["error"].startswith("the stalled operation: rank 1 of 2 stopped answering (no heartbeat for")
    assert 3.0 <= found["seconds"] < 15.0  # dead_after_s = 3: bounded, never a hang


# --------------------------------------------------------------------------- the gate on 2 ranks
@pytest.fixture(scope="module")
def gate_world(tmp_path_factory):
    """Image folders (4 + 4) and 3 ESD-LoRA checkpoints; the one-process gate's report beside them."""
    root = world_inputs(tmp_path_factory.mktemp("gate_world"), images=4, save_at=(2, 4, 6), ddim_steps=4)
    import unlearn_guard.cli as cli

    code = cli.main(gate_args(root, root / "one", "--checkpoints", str(root / "checkpoints"), *GATE_KNOBS))
    return root, code, json.loads((root / "one" / "gate.json").read_text())


def numbers(report: dict) -> dict:
    """Everything in gate.json that is a result (not a timing, a path or provenance)."""
    found = {key: report[key] for key in ("verdict", "passed", "reasons", "thresholds", "config", "seed", "inputs")}
    found["checkpoints"] = []
    for record in report["checkpoints"]:
        probe = record["probe"]
        found["checkpoints"].append({
            **{k: record[k] for k in ("name", "step", "memory", "d_n", "ci_low", "ci_high", "psnr_mean", "nll_mean",
                                      "diverged", "notes", "verdict", "reasons", "cache_key", "normal_nll",
                                      "thumbnails", "weight_sha256")},
            "images": [probe[part]["images"] for part in ("erased", "reference")],
            "probe": {k: probe[k] for k in ("memory", "memory_distance", "config", "normal")},
            "evaluations": [probe[part]["summary"]["unet_evaluations"] for part in ("erased", "reference")],
        })
    return found


def torchrun(argv: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    command = [str(VENV_BIN / "torchrun"), "--nproc-per-node", "2", "--master-port", str(free_port()), *argv]
    return subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=timeout)


def test_gate_under_torchrun_equals_one_process(gate_world, tmp_path):
    root, code, one = gate_world
    done = torchrun(["-m", "unlearn_guard.cli", *gate_args(root, tmp_path / "two", "--checkpoints",
                                                           str(root / "checkpoints"), *GATE_KNOBS)])
    two = json.loads((tmp_path / "two" / "gate.json").read_text())
    assert numbers(two) == numbers(one)
    assert (done.returncode == 0) == (code == 0), done.stderr[-3000:]  # torchrun exits 1 for any rank's 1
    assert two["checkpoints"][0]["memory"] is not None  # the decision read a defined memory score
    assert two["provenance"]["distributed"] == {"world_size": 2, "backend": "gloo", "sharded": True}
    assert two["checkpoints"][0]["probe"]["provenance"]["distributed"]["ranks"] == [0, 1]
    assert done.stdout.count("gate: ") == 1  # rank 0 speaks for both


def _killed_gate(root: Path, output: Path, launcher: str) -> tuple[subprocess.CompletedProcess | list, float]:
    """The gate with rank 1 SIGKILLed as it starts the second checkpoint (index 1)."""
    argv = [str(TESTS / "helpers" / "gate_rank_dies.py"), "1", "1",
            *gate_args(root, output, "--checkpoints", str(root / "checkpoints"), *GATE_KNOBS, "--rank-timeout", "5")]
    started = time.monotonic()
    if launcher == "torchrun":
        return torchrun(argv), time.monotonic() - started
    port = free_port()  # as srun starts ranks: each process gets RANK / WORLD_SIZE / MASTER_* itself
    procs = [subprocess.Popen([sys.executable, *argv], env=environment(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    results = [proc.communicate(timeout=240) + (proc.returncode,) for proc in procs]
    return results, time.monotonic() - started


def test_a_rank_killed_mid_gate_exits_clearly_and_resume_completes(gate_world, tmp_path):
    root, code, one = gate_world
    # 1. Direct launch (srun-like): the survivor names the dead rank and exits 3.
    ranks, seconds = _killed_gate(root, tmp_path / "direct", "direct")
    (out0, err0, code0), (_, _, code1) = ranks
    assert code1 == -9 and code0 == 3, err0[-3000:]
    error = [line for line in err0.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "Traceback" not in err0, err0[-3000:]
    assert error[0].startswith("error: probe failed: checkpoint round 2 of 3 (checkpoint-4): rank 1 of 2 died "
                               "(its process ")
    assert error[0].endswith(f"the 1 checkpoint result(s) finished in this run are cached in "
                             f"{str(tmp_path / 'direct' / 'cache')!r}: rerun with --resume")
    assert seconds < 120
    assert len(list((tmp_path / "direct" / "cache").glob("*.json"))) == 1
    # 2. torchrun: the agent stops the survivor with SIGTERM, or the survivor saw the death first;
    #    either way it says which rank died and exits 3, and torchrun's summary names rank 1 too.
    done, _ = _killed_gate(root, tmp_path / "elastic", "torchrun")
    assert done.returncode != 0
    error = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "rank 1 of 2 died (its process" in error[0], done.stderr[-3000:]
    assert error[0].startswith(("error: probe failed: stopped by the launcher (SIGTERM) after rank 1 of 2 died",
                                "error: probe failed: checkpoint round 2 of 3 (checkpoint-4): rank 1 of 2 died"))
    # torchrun's own summary names rank 1; whether it also lists the survivor's exit code 3 or only the
    # SIGKILL depends on which it saw first (under load, only the SIGKILL: seen in a full-suite run)
    assert "rank      : 1 (local_rank: 1)" in done.stderr, done.stderr[-3000:]
    assert "exitcode  : 3" in done.stderr or "Signal 9 (SIGKILL)" in done.stderr, done.stderr[-3000:]
    assert len(list((tmp_path / "elastic" / "cache").glob("*.json"))) == 1
    # 3. --resume on 2 ranks finishes the killed run: the cached checkpoint is reused, nothing is lost,
    #    and the report equals the uninterrupted one-process report.
    resumed = torchrun(["-m", "unlearn_guard.cli", *gate_args(root, tmp_path / "elastic", "--checkpoints",
                                                              str(root / "checkpoints"), *GATE_KNOBS, "--resume")])
    report = json.loads((tmp_path / "elastic" / "gate.json").read_text())
    assert "resumed 1 of 3 checkpoints from cache" in resumed.stdout, resumed.stderr[-3000:]
    assert [c["from_cache"] for c in report["checkpoints"]] == [True, False, False]
    assert report["resumed_from_cache"] == 1
    assert numbers(report) == numbers(one)
    assert len(list((tmp_path / "elastic" / "cache").glob("*.json"))) == 3
    # 4. The cache the ranks wrote serves one process too: everything resumed, the same report.
    import unlearn_guard.cli as cli

    assert cli.main(gate_args(root, tmp_path / "elastic", "--checkpoints", str(root / "checkpoints"), *GATE_KNOBS,
                              "--resume")) == code
    alone = json.loads((tmp_path / "elastic" / "gate.json").read_text())
    assert alone["resumed_from_cache"] == 3 and numbers(alone) == numbers(one)


class _StoppedAtGather:
    """A one-rank stand-in for a process group whose launcher sends SIGTERM as the gather numbered
    `stop_at` begins, before its work runs (what torchrun does to a survivor under load)."""

    is_main, rank, world_size = True, 0, 1

    def __init__(self, stop_at: int) -> None:
        self.stop_at, self.calls = stop_at, 0

    def gather(self, produce, what):
        from unlearn_guard.distributed import LauncherStopped

        self.calls += 1
        if self.calls == self.stop_at:
            raise LauncherStopped(f"stopped by the launcher (SIGTERM) during {what}")
        return [produce()]

    def shard(self, weights):
        return range(len(weights))

    def check(self):
        return None

    def describe(self):
        return {"world_size": 1, "backend": "fake", "sharded": True}


def test_work_gathered_before_the_launcher_stops_a_rank_is_cached(gate_world, tmp_path, monkeypatch, capsys):
    """The SIGTERM lands before the next gather would have cached the round already gathered: rank 0
    caches it on the way out and says so, and --resume probes only what is left."""
    import unlearn_guard.cli as cli
    from unlearn_guard.gate import runner

    root, code, one = gate_world
    argv = gate_args(root, tmp_path / "out", "--checkpoints", str(root / "checkpoints"), *GATE_KNOBS)
    group = _StoppedAtGather(stop_at=3)  # 1: the checks, 2: round 1 (checkpoint-2), 3: round 2
    monkeypatch.setattr(runner.distributed_work, "resolve", lambda *a: group)
    assert cli.main(argv) == 3
    error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert error == [f"error: probe failed: stopped by the launcher (SIGTERM) during checkpoint round 2 of 3 "
                     f"(checkpoint-4); the 1 checkpoint result(s) finished in this run are cached in "
                     f"{str(tmp_path / 'out' / 'cache')!r}: rerun with --resume"]
    assert len(list((tmp_path / "out" / "cache").glob("*.json"))) == 1
    monkeypatch.setattr(runner.distributed_work, "resolve", lambda *a: None)  # resume in one process
    assert cli.main([*argv, "--resume"]) == code
    report = json.loads((tmp_path / "out" / "gate.json").read_text())
    assert [c["from_cache"] for c in report["checkpoints"]] == [True, False, False]
    assert numbers(report) == numbers(one)


# --------------------------------------------------------------------------- adversarial prompts on 2 ranks
ADVERSARIAL_SEEDS = [12, 3, 0]  # 3 prompts: rank 0 attacks the first, rank 1 the other two
ADVERSARIAL_KNOBS = [*GATE_KNOBS, "--set", "inversion.num_steps=3", "--attacks", "memory,adversarial-prompt,utility",
                     "--judge", "shapes-world:circle", "--adv-set", "timesteps=50,150", "--adv-set", "num_steps=6",
                     # 2 settings: one per rank
                     "--utility-erased", "circle", "--utility-n", "2", "--utility-settings", "ddim:4:4,pndm:3:4"]


@pytest.fixture(scope="module")
def adversarial_world(tmp_path_factory):
    """2 circles and 2 other shapes, 3 prompts, the world retrained without circles as the checkpoint
    (its UNet on the shipped world, which makes the targets); the one-process gate's report."""
    import unlearn_guard.cli as cli
    from unlearn_guard.world import retrained_world_dir

    root = image_folders(tmp_path_factory.mktemp("adversarial_world"), 2)
    (root / "prompts.csv").write_text("prompt,seed\n" + "".join(f"a circle,{s}\n" for s in ADVERSARIAL_SEEDS))
    argv = [*gate_args(root, root / "one", "--unet-weights", str(retrained_world_dir("circle") / "pipeline" / "unet"),
                       "--adv-prompts", str(root / "prompts.csv"), *ADVERSARIAL_KNOBS)]
    code = cli.main(argv)
    return root, argv, code, json.loads((root / "one" / "gate.json").read_text())


def without_timings(part: dict) -> dict:
    """An adversarial-prompt part's results: no seconds, provenance or thumbnails; losses and the
    judge's scores rounded (a batch of other prompts moves them by float rounding only:
    tests/test_adversarial_prompt.py)."""
    rows = [{**{k: v for k, v in row.items() if k not in ("image", "block_losses", "final_loss", "score")},
             "block_losses": [round(v, 4) for v in row["block_losses"]], "thumbnail": "image" in row,
             "score": None if row.get("score") is None else round(row["score"], 4)}
            for row in part["prompts"]]
    return {**{k: v for k, v in part.items() if k not in ("seconds", "provenance", "prompts", "cache_key")},
            "prompts": rows}


def without_utility_timings(part: dict) -> dict:
    return {k: v for k, v in part.items() if k not in ("seconds", "provenance", "cache_key")}


def test_adversarial_prompts_and_utility_under_torchrun_equal_one_process(adversarial_world, tmp_path):
    """Each rank attacks a contiguous slice of the prompts and measures a share of the utility settings;
    rank 0 gathers them into the parts a one-process run writes, caches them (a one-process --resume
    takes them from there) and decides the same."""
    root, argv, code, one = adversarial_world
    two_argv = [a if a != str(root / "one") else str(tmp_path / "two") for a in argv]
    done = torchrun(["-m", "unlearn_guard.cli", *two_argv])
    assert (tmp_path / "two" / "gate.json").is_file(), done.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "gate.json").read_text())
    (alone,), (shared,) = one["checkpoints"], two["checkpoints"]
    part_one, part_two = alone["adversarial_prompt"], shared["adversarial_prompt"]
    assert without_timings(part_two) == without_timings(part_one)
    assert [row["index"] for row in part_two["prompts"]] == [0, 1, 2]
    rows = part_one["prompts"]
    assert rows[0]["attacked"] and any(row["attacked"] for row in rows[1:])  # both ranks ran gradient steps
    assert part_two["provenance"]["distributed"]["prompts_per_rank"] == [1, 2]
    utility_one, utility_two = alone["utility"], shared["utility"]
    assert without_utility_timings(utility_two) == without_utility_timings(utility_one)
    assert [s["label"] for s in utility_two["settings"]] == ["ddim g4.0 4 steps", "pndm g3.0 4 steps"]
    assert utility_two["provenance"]["distributed"]["settings_per_rank"] == [1, 1]
    assert utility_two["provenance"]["model_source"] == utility_one["provenance"]["model_source"]
    assert two["provenance"]["distributed"] == {"world_size": 2, "backend": "gloo", "sharded": True}
    assert (shared["memory"], shared["d_n"], shared["reasons"], shared["verdict"]) == \
        (alone["memory"], alone["d_n"], alone["reasons"], alone["verdict"])
    assert shared["cache_keys"] == alone["cache_keys"] and (done.returncode == 0) == (code == 0)
    assert done.stdout.count("gate: ") == 1  # rank 0 speaks for both
    # the cache the ranks wrote serves one process: everything resumed, nothing attacked again
    import unlearn_guard.cli as cli

    assert cli.main([*two_argv, "--resume"]) == code
    resumed = json.loads((tmp_path / "two" / "gate.json").read_text())
    assert resumed["resumed_from_cache"] == 1 and without_timings(resumed["checkpoints"][0]["adversarial_prompt"]) == \
        without_timings(part_one)
    assert without_utility_timings(resumed["checkpoints"][0]["utility"]) == without_utility_timings(utility_one)
