"""`unlearn-guard gate --attacks memory,multi-memory,concept-inversion` and `probe --memories` on the
small world: each attack's own threshold, its gate.json and --json entries, its cache, its HTML
section (opened in Chromium), and the errors; the decision rules on their own."""

from __future__ import annotations

import json

import pytest
import torch

from _gate_helpers import CHEAP, gate_args, json_line, run_cli, world_inputs
from test_report_html import image_check

torch.set_num_threads(1)

ATTACKS = ["--attacks", "memory,multi-memory,concept-inversion", "--memories", "3", "--judge", "shapes-world:circle",
           "--ci-steps", "10", "--ci-generations", "6", "--ci-init-token", "square", "--set", "batch_size=4",
           "--decoder-steps", "5", "--set", "inversion.num_steps=10"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """3 circles, 3 other shapes, 2 support images (squares and others), ESD-LoRA after 2 and 4 iterations."""
    from unlearn_guard.gate.folders import save_image_folder
    from unlearn_guard.world.evaluate import probe_sets

    root = world_inputs(tmp_path_factory.mktemp("attacks"), images=3, save_at=(2, 4), ddim_steps=5)
    save_image_folder(root / "support", probe_sets("square", 2, seed=777).reference, ["", ""], prefix="support")
    return root


@pytest.fixture(scope="module")
def gated(world, tmp_path_factory):
    """One gate over both checkpoints with all three attacks: (exit code, --json verdict, output folder)."""
    out = tmp_path_factory.mktemp("gated") / "out"
    from unlearn_guard.cli import main

    code = main(gate_args(world, out, *CHEAP, *ATTACKS, "--checkpoints", str(world / "checkpoints"),
                          "--support-images", str(world / "support")))
    return code, json.loads((out / "gate.json").read_text()), out


def test_every_attack_has_its_part_its_reason_and_its_threshold(gated):
    code, report, out = gated
    assert report["attacks"]["attacks"] == ["memory", "multi-memory", "concept-inversion"]
    assert report["thresholds"]["max_attack_success"] > 0 and report["thresholds"]["max_multi_memory"] > 0
    for record in report["checkpoints"]:
        assert [r.split(":")[0] for r in record["reasons"][1:]] == ["multi-memory", "concept-inversion"]
        ci = record["concept_inversion"]
        attack = ci["attack"]
        assert attack["n"] == 6 and attack["successes"] == sum(attack["verdicts"])
        assert attack["ci_low"] <= attack["rate"] <= attack["ci_high"]
        assert ci["config"]["steps"] == 10 and ci["judge"] == "shapes-world:circle" and len(ci["thumbnails"]) == 2
        assert (out / "concept_inversion" / record["name"] / "learned_embeds.safetensors").is_file()
        memories = record["multi_memory"]
        assert memories["search"]["memories"] == 3 and len(memories["images"]) == 3
        assert len(memories["images"][0]["cosine"]) == 3 and len(memories["thumbnails"][0]["memories"]) == 3
        # the concept-inversion rule, recomputed from the record: upper end against the threshold
        ci_ok = attack["ci_high"] <= report["thresholds"]["max_attack_success"]
        assert ("does not bring it back" in record["reasons"][2]) is ci_ok
        assert not ci_ok or record["passed"] is not False or "still remembers" in " ".join(record["reasons"][:2])
    assert code == (0 if report["passed"] else 1)


def test_thresholds_apply_per_attack_from_the_cache(world, gated, capsys):
    """Changing one attack's threshold re-decides from the cached parts: nothing is computed again."""
    _, report, out = gated
    loose = ["--max-memory", "1", "--max-multi-memory", "1", "--max-attack-success", "1"]
    code, stdout, err = run_cli(gate_args(world, out, *CHEAP, *ATTACKS, "--checkpoints", str(world / "checkpoints"),
                                          "--support-images", str(world / "support"), "--resume", "--json", *loose),
                                capsys)
    verdict = json_line(stdout)
    assert "resumed 2 of 2 checkpoints from cache" in err and code == 0 and verdict["passed"]
    assert all(c["concept_inversion"]["rate"] is not None and c["multi_memory"]["memories_per_image"] == 3
               for c in verdict["checkpoints"])
    strict = [*loose[:4], "--max-attack-success", "0.01"]  # only the concept-inversion bar tightened
    code, stdout, err = run_cli(gate_args(world, out, *CHEAP, *ATTACKS, "--checkpoints", str(world / "checkpoints"),
                                          "--support-images", str(world / "support"), "--resume", "--json", *strict),
                                capsys)
    verdict = json_line(stdout)
    assert "resumed 2 of 2" in err
    for checkpoint in verdict["checkpoints"]:
        assert checkpoint["passed"] is (checkpoint["concept_inversion"]["ci_high"] <= 0.01)
    assert code == (0 if verdict["passed"] else 1)


def test_the_report_shows_memories_side_by_side_and_the_generations(gated, tmp_path):
    _, report, out = gated
    html = (out / "report.html").read_text()
    assert "Multi-memory search (Sequential Inversion Block)" in html and 'class="cos"' in html
    assert "Concept Inversion" in html and "Learned token saved to" in html
    assert "Concept Inversion attack success by training step" in html and "Best-of-M memory score by training step" in html
    images, broken, dom = image_check(out / "report.html", tmp_path)
    per_checkpoint = 2 + 2 * 2 + 2 * (1 + 3) + 2  # plots, query|reconstruction pairs, query + 3 memories, generations
    assert broken == 0 and images == 3 + len(report["checkpoints"]) * per_checkpoint  # + 3 by-step plots


def test_concept_inversion_alone_runs_without_the_probe(world, tmp_path, capsys):
    code, stdout, _ = run_cli(gate_args(world, tmp_path / "ci", *CHEAP, "--attacks", "concept-inversion", "--judge",
                                        "shapes-world:circle", "--ci-steps", "5", "--ci-generations", "4", "--json"),
                              capsys)
    verdict = json_line(stdout)
    record = json.loads((tmp_path / "ci" / "gate.json").read_text())["checkpoints"][0]
    assert "probe" not in record and record["attacks"] == ["concept-inversion"] and len(record["reasons"]) == 1
    assert verdict["checkpoints"][0]["concept_inversion"]["n"] == 4 and code == verdict["exit_code"]
    assert "Concept Inversion" in (tmp_path / "ci" / "report.html").read_text()


@pytest.mark.parametrize("extra, message", [
    (["--attacks", "memory,fuzzing"], "--attacks: got 'memory,fuzzing'"),
    (["--attacks", "concept-inversion"], "--attacks concept-inversion needs --judge"),
    (["--attacks", "multi-memory"], "--attacks multi-memory needs --support-images"),
    (["--attacks", "concept-inversion", "--judge", "shapes-world:star"], "shape: got 'star'"),
    (["--attacks", "concept-inversion", "--judge", "nosuchmodule:judge"], "--judge nosuchmodule:judge: cannot import"),
    (["--attacks", "concept-inversion", "--judge", "shapes-world:circle", "--min-dn", "2"], "--min-dn: a condition on"),
    (["--max-attack-success", "1.5"], "--max-attack-success: got '1.5'"),
    (["--attacks", "multi-memory", "--support-images", "nowhere"], "--support-images: 'nowhere' does not exist"),
    (["--attacks", "concept-inversion", "--judge", "shapes-world:circle", "--ci-generations", "0"], "--ci-generations"),
])
def test_bad_attack_arguments_are_one_error_line_before_any_compute(world, tmp_path, capsys, monkeypatch, extra, message):
    import unlearn_guard.gate.runner as runner

    monkeypatch.setattr(runner, "load_checkpoint_model", lambda *a, **k: pytest.fail("loaded a model first"))
    code, _, err = run_cli(gate_args(world, tmp_path / "bad", *CHEAP, *extra), capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and message in errors[0] and "Traceback" not in err, err


def test_probe_with_memories_writes_the_search_and_its_html(world, tmp_path, capsys):
    code, stdout, _ = run_cli(["probe", "--model", "shapes-world", "--concept-images", str(world / "concept"),
                               "--reference-images", str(world / "reference"), "--preset", "fast", "--set",
                               "inversion.num_steps=3", "--set", "bootstrap_samples=50", "--quiet", "--json",
                               "--memories", "3", "--support-images", str(world / "support"), "--variant", "paper", "--decoder-steps", "5",
                               "--output", str(tmp_path / "p.json"), "--html", str(tmp_path / "p.html")], capsys)
    assert code == 0
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["multi_memory"]["search"]["variant"] == "paper" and len(data["multi_memory"]["images"]) == 3
    assert json_line(stdout)["multi_memory"]["memories_per_image"] == 3
    assert "Multi-memory search" in (tmp_path / "p.html").read_text()
    code, _, err = run_cli(["probe", "--model", "shapes-world", "--concept-images", str(world / "concept"),
                            "--memories", "3", "--output", str(tmp_path / "q.json")], capsys)
    assert code == 2 and "needs --support-images" in err


# --------------------------------------------------------------------------- the rules on their own
def _record(attacks, best=(0.2, 0.1, 0.3), success=(2, 32, 0.0625, 0.017, 0.2)):
    k, n, rate, low, high = success
    return {"attacks": attacks, "memory": {"value": 0.1, "ci_low": 0.0, "ci_high": 0.2}, "psnr_mean": 30.0,
            "multi_memory": {"memory": dict(zip(("value", "ci_low", "ci_high"), best)), "summary": {}},
            "concept_inversion": {"attack": {"successes": k, "n": n, "rate": rate, "ci_low": low, "ci_high": high}}}


@pytest.mark.parametrize("attacks, best, success, thresholds, passed", [
    (["memory"], (0.9, 0.8, 1.0), (32, 32, 1.0, 0.9, 1.0), {}, True),          # parts of attacks that did not run
    (["memory", "multi-memory"], (0.2, 0.1, 0.5), None, {"max_multi_memory": 0.5}, True),
    (["memory", "multi-memory"], (0.2, 0.1, 0.51), None, {"max_multi_memory": 0.5}, False),
    (["concept-inversion"], None, (2, 32, 0.0625, 0.017, 0.2), {"max_attack_success": 0.2}, True),
    (["concept-inversion"], None, (2, 32, 0.0625, 0.017, 0.2), {"max_attack_success": 0.19}, False),  # upper end decides
    (["memory", "concept-inversion"], None, (0, 32, 0.0, 0.0, 0.107), {"max_memory": 0.1}, False),  # memory fails
])
def test_each_attack_is_decided_by_its_own_threshold(attacks, best, success, thresholds, passed):
    from unlearn_guard.gate.decision import Thresholds, decide

    record = _record(attacks, **{k: v for k, v in (("best", best), ("success", success)) if v is not None})
    decision = decide(record, Thresholds(**thresholds))
    assert decision.passed is passed and len(decision.reasons) == len(attacks)


def test_attack_lists_parse_and_settings_check_themselves():
    from unlearn_guard.errors import InputError
    from unlearn_guard.gate.attacks import AttackSettings, parse_attacks

    assert parse_attacks("concept-inversion, memory,memory") == ("concept-inversion", "memory")
    assert parse_attacks(None) == ("memory",)
    with pytest.raises(InputError, match="--attacks"):
        parse_attacks(" , ")
    with pytest.raises(InputError, match="--memories: got 1"):
        from unlearn_guard.attacks import MemorySearchConfig

        AttackSettings(attacks=("multi-memory",), support_images="s", search=MemorySearchConfig(memories=1))


def test_the_gate_states_every_attack_rule_before_it_runs(world, tmp_path, capsys, monkeypatch):
    """The opening line names each attack's rule (a merge once left `_gate_on` without the attack
    settings: every gate run stopped with a NameError, exit 3, before probing anything)."""
    import unlearn_guard.gate.runner as runner

    seen = {}

    def stub_gate(config, echo, notice):  # the rules line only, no compute
        seen["attacks"] = config.attacks.attacks
        return {"passed": True, "reasons": ["stub"]}

    monkeypatch.setattr(runner, "run_gate", stub_gate)
    loud = [a for a in CHEAP if a != "--quiet"]
    code, stdout, stderr = run_cli(gate_args(world, tmp_path / "rules", *loud, *ATTACKS,
                                             "--support-images", str(world / "support")), capsys)
    assert code == 0, stderr
    line = next(x for x in (stdout + stderr).splitlines() if x.startswith("gating "))
    assert "the memory score's 95% upper end <=" in line
    assert "the best-of-3 memory score's upper end <=" in line
    assert "the concept-inversion success rate's Wilson upper end <=" in line
    assert set(seen["attacks"]) == {"memory", "multi-memory", "concept-inversion"}
