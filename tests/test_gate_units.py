"""The gate's parts on their own: --set parsing, the decision rule, checkpoint discovery, the cache key."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

import pytest

from unlearn_guard.config import ProbeConfig
from unlearn_guard.errors import InputError
from unlearn_guard.gate.cache import ResultCache, cache_key
from unlearn_guard.gate.checkpoints import Weights, discover_checkpoints, file_sha256, weights_in
from unlearn_guard.gate.decision import Thresholds, decide, overall
from unlearn_guard.gate.knobs import apply_settings, settable_keys


# --------------------------------------------------------------------------- --set key=value
@pytest.mark.parametrize("assignment, path, value", [
    ("inversion.num_steps=20", ("inversion", "num_steps"), 20),
    ("distance=w1", ("distance",), "w1"),
    ("batch_size=none", ("batch_size",), None),
    ("batch_size=3", ("batch_size",), 3),
    ("confidence=0.9", ("confidence",), 0.9),
    ("quantize_psnr=false", ("quantize_psnr",), False),
    ("inversion.regularization.enabled=off", ("inversion", "regularization", "enabled"), False),
    ("inversion.regularization.lambda_ac=12.5", ("inversion", "regularization", "lambda_ac"), 12.5),
    ("inversion.early_window=(0,3)", ("inversion", "early_window"), (0, 3)),
    ("inversion.late_window=[1, 4]", ("inversion", "late_window"), (1, 4)),
    ("inversion.z0_mode=mean", ("inversion", "z0_mode"), "mean"),
])
def test_set_reaches_every_nested_field(assignment, path, value):
    config = apply_settings(ProbeConfig.from_preset("mofc"), [assignment])
    found = config
    for name in path:
        found = getattr(found, name)
    assert found == value and type(found) is type(value)


def test_set_relabels_science_changes_but_not_bookkeeping():
    assert apply_settings(ProbeConfig.from_preset("fast"), ["inversion.num_steps=4"]).preset == "custom"
    assert apply_settings(ProbeConfig.from_preset("fast"), ["batch_size=2", "seed=3"]).preset == "fast"


@pytest.mark.parametrize("assignment, message", [
    ("nosuchfield=1", "ProbeConfig has no field 'nosuchfield'"),
    ("inversion.regularization.nope=1", "RegularizationConfig has no field 'nope'"),
    ("inversion=3", "'inversion' is a group"),
    ("seed.value=3", "'seed' is a single value"),
    ("seed=1.5", "--set seed=1.5: expected an int"),
    ("quantize_psnr=maybe", "expected true or false"),
    ("inversion.early_window=1,2,3", "expected a list like an int,an int"),
    ("inversion.early_window=3,1", "start <= stop"),
    ("preset=fast", "choose it with --preset"),
    ("=3", "expected key=value"),
])
def test_set_errors_name_the_key_and_value(assignment, message):
    with pytest.raises(InputError) as caught:
        apply_settings(ProbeConfig(), [assignment])
    assert message in str(caught.value)


def test_set_picks_up_fields_added_later_without_code_changes():
    """The parser reads the dataclass fields and annotations, so a new field (e.g. a kernel backend) works."""

    @dataclass(frozen=True)
    class WithBackend(ProbeConfig):
        backend: Literal["auto", "triton", "torch"] = "auto"

    config = apply_settings(WithBackend(), ["backend=torch"])
    assert config.backend == "torch" and "backend" in settable_keys(WithBackend())
    with pytest.raises(InputError, match=re.escape("--set backend=cuda: expected 'auto' | 'triton' | 'torch'")):
        apply_settings(WithBackend(), ["backend=cuda"])


def test_settable_keys_cover_every_leaf_field():
    keys = settable_keys()
    assert "inversion.regularization.lambda_kl" in keys and "distance" in keys
    assert "preset" not in keys and "progress" not in keys and "inversion" not in keys
    for key in keys:  # every listed key is accepted with its current value
        value = ProbeConfig()
        for name in key.split("."):
            value = getattr(value, name)
        text = "none" if value is None else ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        assert apply_settings(ProbeConfig(), [f"{key}={text}"]) == ProbeConfig(), key


# --------------------------------------------------------------------------- the decision
NAN = math.nan


def entry(memory=(0.2, 0.1, 0.3), d_n=(2.5, 2.1, 2.9), psnr=30.0, notes=(), control=None):
    """A checkpoint record as the runner builds it: memory score and d_N with intervals, mean PSNR and,
    when given, the negative control's memory score."""
    record = {"memory": None if memory is None else dict(zip(("value", "ci_low", "ci_high"), memory)),
              "psnr_mean": psnr, "notes": list(notes)}
    record.update(zip(("d_n", "ci_low", "ci_high"), d_n) if d_n is not None else (("d_n", None),))
    if control is not None:
        record["control_memory"] = dict(zip(("value", "ci_low", "ci_high"), control))
    return record


@pytest.mark.parametrize("record, thresholds, verdict, reasons", [
    (entry(memory=(0.2, 0.1, 0.3)), Thresholds(0.5), "pass", 1),
    (entry(memory=(0.2, 0.1, 0.5)), Thresholds(0.5), "pass", 1),       # the upper end at the threshold passes
    (entry(memory=(0.2, 0.1, 0.51)), Thresholds(0.5), "fail", 1),
    (entry(memory=(1.0, 1.0, 1.0)), Thresholds(1.0), "pass", 1),       # 1 turns the rule off
    (entry(memory=None), Thresholds(1.0), "pass", 1),                  # ... even when it is undefined
    (entry(memory=(0.45, 0.3, 0.6)), Thresholds(0.5), "fail", 1),     # point below, upper end above: fails
    (entry(memory=(0.3, NAN, NAN)), Thresholds(0.5), "pass", 1),       # no bootstrap: the point value decides
    (entry(memory=(NAN, NAN, NAN)), Thresholds(0.5), "inconclusive", 1),  # an undefined score never decides
    (entry(memory=None, notes=["d_N not computed"]), Thresholds(0.5), "inconclusive", 1),
    (entry(memory=(0.9, 0.8, 1.0), control=(0.9, 0.8, 1.0)), Thresholds(0.5), "inconclusive", 1),  # inverts all
    (entry(memory=(0.2, 0.1, 0.3), control=(0.6, 0.4, 0.8)), Thresholds(0.5), "inconclusive", 1),
    (entry(memory=(0.9, 0.8, 1.0), control=(0.1, 0.0, 0.3)), Thresholds(0.5), "fail", 1),  # control reads clean
    (entry(memory=(0.9, 0.8, 1.0), control=(0.5, 0.3, 0.7)), Thresholds(0.5), "fail", 1),  # at the bar: not above
    (entry(), Thresholds(0.5, min_d_n=2.0), "pass", 2),
    (entry(d_n=(2.5, 1.9, 3.1)), Thresholds(0.5, min_d_n=2.0), "fail", 2),  # d_N's lower end decides
    (entry(d_n=None), Thresholds(0.5, min_d_n=2.0), "fail", 2),
    (entry(psnr=25.0), Thresholds(0.5, max_psnr=25.0), "pass", 2),
    (entry(psnr=25.01), Thresholds(0.5, max_psnr=25.0), "fail", 2),  # forgotten by M but still reconstructs
    (entry(psnr=None), Thresholds(0.5, max_psnr=25.0), "fail", 2),
    (entry(memory=None, psnr=20.0), Thresholds(0.5, max_psnr=25.0), "inconclusive", 2),
    (entry(memory=None, psnr=30.0), Thresholds(0.5, max_psnr=25.0), "fail", 2),  # a stated rule that fails
    (entry(memory=None, d_n=(2.5, 1.9, 3.1)), Thresholds(0.5, min_d_n=2.0), "fail", 2),
    (entry(memory=None), Thresholds(0.5, min_d_n=2.0), "inconclusive", 2),
])
def test_decision_table(record, thresholds, verdict, reasons):
    decision = decide(record, thresholds)
    assert decision.verdict == verdict and decision.passed is (verdict == "pass")
    assert decision.inconclusive is (verdict == "inconclusive")
    assert len(decision.reasons) == reasons
    assert (f"{thresholds.max_memory:g} (max memory)" in decision.reasons[0] or "rule off" in decision.reasons[0]
            or decision.reasons[0].startswith("inconclusive: "))
    assert decision.exit_code == {"pass": 0, "fail": 1, "inconclusive": 4}[verdict]


def test_an_inconclusive_reason_says_why_and_never_remembers_or_forgets():
    undefined = decide(entry(memory=None, notes=["memory score not computed: the memory score is undefined: only 0 "
                                                 "of 4 reference seeds are typical"]), Thresholds(0.5)).reasons[0]
    assert undefined.startswith("inconclusive: memory score undefined (the memory score is undefined: only 0 of 4")
    control = decide(entry(memory=(0.9, 0.8, 1.0), control=(0.7, 0.5, 0.9)), Thresholds(0.5)).reasons[0]
    assert "regenerates images it cannot have learned" in control and "0.700 [0.500, 0.900] > 0.5" in control
    for reason in (undefined, control):
        assert "still remembers" not in reason and "forgotten" not in reason


def test_the_gate_fails_before_it_is_inconclusive():
    decisions = {"a": decide(entry(memory=None), Thresholds(0.5)), "b": decide(entry(), Thresholds(0.5))}
    assert overall(decisions).verdict == "inconclusive" and "a" in overall(decisions).reasons[0]
    decisions["c"] = decide(entry(memory=(0.9, 0.8, 1.0)), Thresholds(0.5))
    both = overall(decisions)
    assert both.verdict == "fail" and both.reasons[1] == "1 inconclusive: a"
    # an attack that fails on its own evidence makes an inconclusive memory rule a fail
    record = {**entry(memory=None), "attacks": ["memory", "concept-inversion"],
              "concept_inversion": {"attack": {"rate": 0.9, "ci_low": 0.8, "ci_high": 1.0, "successes": 9, "n": 10}}}
    assert decide(record, Thresholds(0.5)).verdict == "fail"


def test_the_reason_names_the_end_that_decided():
    reason = decide(entry(memory=(0.45, 0.3, 0.6)), Thresholds(0.5)).reasons[0]
    assert reason == "memory M = 0.450 [0.300, 0.600]: upper end 0.600 > 0.5 (max memory): still remembers"
    reason = decide(entry(memory=(0.2, 0.1, 0.3)), Thresholds(0.5)).reasons[0]
    assert reason.endswith("upper end 0.300 <= 0.5 (max memory): forgotten like a model that never saw it")


def test_the_default_threshold_is_the_calibrated_one():
    from unlearn_guard.signal import DEFAULT_MAX_MEMORY

    assert Thresholds().max_memory == DEFAULT_MAX_MEMORY and 0 < DEFAULT_MAX_MEMORY < 1


def test_overall_fails_when_any_checkpoint_fails():
    ok, bad = decide(entry(), Thresholds(0.5)), decide(entry(memory=(0.9, 0.8, 1.0)), Thresholds(0.5))
    assert overall({"a": ok, "b": ok}).passed
    verdict = overall({"a": ok, "b": bad, "c": bad})
    assert not verdict.passed and "2 of 3" in verdict.reasons[0] and "b, c" in verdict.reasons[0]


@pytest.mark.parametrize("field, value, match", [
    ("max_memory", 0, "--max-memory: got 0; expected a number in \\(0, 1\\]"),
    ("max_memory", 1.5, "--max-memory"), ("max_memory", "x", "--max-memory"), ("max_memory", None, "--max-memory"),
    ("min_d_n", -1, "--min-dn: got -1; expected a positive number"), ("min_d_n", math.nan, "--min-dn"),
    ("min_d_n", math.inf, "--min-dn"), ("max_psnr", "x", "--max-psnr"),
])
def test_thresholds_must_be_in_range(field, value, match):
    with pytest.raises(InputError, match=match):
        Thresholds(**{field: value})


# --------------------------------------------------------------------------- checkpoint discovery
def _touch(path, data=b"w"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.mark.parametrize("files, expected", [
    (["pytorch_lora_weights.safetensors"], {"lora": "."}),
    (["adapter_config.json", "adapter_model.safetensors"], {"lora": "."}),
    (["unet_lora/pytorch_lora_weights.safetensors", "optimizer.bin"], {"lora": "unet_lora"}),
    (["unet/config.json", "unet/diffusion_pytorch_model.safetensors", "scheduler.bin"],
     {"unet_weights": "unet"}),
    (["text_encoder/config.json", "text_encoder/model.safetensors"], {"text_encoder": "text_encoder"}),
    (["model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", "scaler.pt"],
     {"unet_weights": "model.safetensors"}),
    (["esd-unet.pt"], {"unet_weights": "esd-unet.pt"}),
    (["text_encoder/config.json", "text_encoder/model.safetensors", "pytorch_lora_weights.safetensors"],
     {"lora": ".", "text_encoder": "text_encoder"}),
])
def test_weights_in_a_checkpoint_folder(tmp_path, files, expected):
    for name in files:
        _touch(tmp_path / name)
    weights = weights_in(tmp_path)
    found = {k: v for k, v in weights.to_dict().items() if v is not None}
    assert found == {k: str(tmp_path / v) if v != "." else str(tmp_path) for k, v in expected.items()}


def test_checkpoints_are_found_in_step_order(tmp_path):
    for step in (1000, 500, 50):
        _touch(tmp_path / f"checkpoint-{step}" / "pytorch_lora_weights.safetensors")
    _touch(tmp_path / "logs" / "events.txt")
    _touch(tmp_path / "checkpoint-final" / "pytorch_lora_weights.safetensors")  # not checkpoint-<step>
    found = discover_checkpoints(tmp_path)
    assert [(c.name, c.step) for c in found] == [("checkpoint-50", 50), ("checkpoint-500", 500), ("checkpoint-1000", 1000)]


@pytest.mark.parametrize("make, message", [
    (lambda p: _touch(p / "notes.txt"), "holds no erased weights"),
    (lambda p: (_touch(p / "a/adapter_config.json"), _touch(p / "b/adapter_config.json")), "holds 2 LoRA adapters"),
    (lambda p: _touch(p / "unet/config.json"), "has a unet/ folder without"),
])
def test_ambiguous_or_empty_checkpoints_are_refused(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(InputError, match=message):
        weights_in(tmp_path)


def test_weights_check_their_paths(tmp_path):
    with pytest.raises(InputError, match="--unet-weights: .* has suffix '.txt'"):
        _touch(tmp_path / "w.txt")
        Weights(unet_weights=tmp_path / "w.txt")
    with pytest.raises(InputError, match="--text-encoder: .* has suffix '.txt'"):
        Weights(text_encoder=tmp_path / "w.txt")
    assert Weights().is_base and Weights().describe().startswith("base model")


# --------------------------------------------------------------------------- the cache
def _key(**changes):
    inputs = {
        "model": {"source": "/a/pipeline", "kind": "folder", "sha256": "m" * 64, "files": 3},
        "weights": {"/ckpt/lora.safetensors": "w" * 64},
        "concept": [("e1", "a circle"), ("e2", "a circle")],
        "reference": [("r1", "a square"), ("r2", "a ring")],
        "config": ProbeConfig.from_preset("fast").to_dict(),
    }
    inputs.update(changes)
    return cache_key(**inputs)


@pytest.mark.parametrize("changes, same", [
    ({}, True),
    ({"weights": {"/moved/elsewhere.safetensors": "w" * 64}}, True),            # moving a file keeps the key
    ({"model": {"source": "/b/pipeline", "kind": "folder", "sha256": "m" * 64, "files": 3}}, True),
    ({"config": ProbeConfig.from_preset("fast", progress=False).to_dict()}, True),  # progress bars change nothing
    ({"config": ProbeConfig.from_preset("fast", batch_size=1).to_dict()}, True),  # chunking changes nothing
    ({"weights": {"/ckpt/lora.safetensors": "x" * 64}}, False),
    ({"model": {"source": "/a/pipeline", "kind": "folder", "sha256": "n" * 64, "files": 3}}, False),
    ({"concept": [("e1", "a circle"), ("e3", "a circle")]}, False),             # another image
    ({"concept": [("e1", "a circle"), ("e2", "a red circle")]}, False),         # another prompt
    ({"reference": [("r2", "a ring"), ("r1", "a square")]}, False),             # another order
    ({"config": ProbeConfig.from_preset("fast", seed=1).to_dict()}, False),
    ({"config": ProbeConfig.from_preset("mofc").to_dict()}, False),
    ({"model": {"source": "org/model", "kind": "hub", "revision": "abc"}}, False),
    ({"extra": {"thumbnails": 4}}, False),
])
def test_cache_key_changes_exactly_when_the_numbers_could(changes, same):
    assert (_key(**changes) == _key()) is same


def _reference_set_key(hashes=None, placement=None, **changes):
    from unlearn_guard.gate.plan import PartKeys

    inputs = {"fingerprint": {"source": "/a/pipeline", "kind": "folder", "sha256": "m" * 64, "files": 3},
              "concept": [("e1", "a circle"), ("e2", "a circle")], "reference": [("r1", "a square"), ("r2", "a ring")],
              "config": ProbeConfig.from_preset("fast").to_dict(), "thumbnails": {"thumbnails": 2},
              "settings": None, "support": []}
    keys = PartKeys(**{**inputs, **changes})
    return keys.reference_set(hashes or {"/ckpt/lora.safetensors": "w" * 64},
                              placement or {"device": "cpu", "dtypes": ["torch.float32"] * 3})


@pytest.mark.parametrize("changes, same", [
    ({}, True),
    ({"concept": [("e3", "a star"), ("e4", "a star")]}, True),  # another concept set: the point of the key
    ({"thumbnails": {"thumbnails": 0}}, True),
    ({"hashes": {"/moved/lora.safetensors": "w" * 64}}, True),
    ({"hashes": {"/ckpt/lora.safetensors": "x" * 64}}, False),
    ({"fingerprint": {"source": "/a/pipeline", "kind": "folder", "sha256": "n" * 64, "files": 3}}, False),
    ({"reference": [("r1", "a square"), ("r3", "a ring")]}, False),  # another image
    ({"reference": [("r1", "a square"), ("r2", "a red ring")]}, False),  # another prompt
    ({"reference": [("r2", "a ring"), ("r1", "a square")]}, False),  # another order
    ({"config": ProbeConfig.from_preset("fast", seed=1).to_dict()}, False),
    ({"config": ProbeConfig.from_preset("mofc").to_dict()}, False),
    ({"placement": {"device": "cuda:0", "dtypes": ["torch.float32"] * 3}}, False),
    ({"placement": {"device": "cpu", "dtypes": ["torch.bfloat16", "torch.float32", "torch.bfloat16"]}}, False),
])
def test_the_reference_set_key_ignores_the_concept_set_and_nothing_else(changes, same):
    """The reference set's own probe (reused by gates of other concept sets, cache/sets/) is keyed by
    everything its numbers depend on, and by no concept image; never the key of a checkpoint's part."""
    assert (_reference_set_key(**changes) == _reference_set_key()) is same
    assert _reference_set_key() != _key(concept=[], extra={"part": "reference-set"})


def test_cache_round_trip_is_atomic_and_checks_its_key(tmp_path):
    cache = ResultCache(tmp_path / "cache")
    assert cache.get("k1") is None and len(cache) == 0
    cache.put("k1", {"d_n": 1.5})
    assert cache.get("k1") == {"d_n": 1.5, "cache_key": "k1"} and len(cache) == 1
    assert not list((tmp_path / "cache").glob(".*"))  # no temporary file left behind
    (tmp_path / "cache" / "k2.json").write_text('{"d_n": 2.0, "cache_key": "k1"}')  # copied by hand
    with pytest.warns(UserWarning, match="does not hold key k2"):
        assert cache.get("k2") is None
    (tmp_path / "cache" / "k3.json").write_text("{half")
    with pytest.warns(UserWarning, match="unreadable"):
        assert cache.get("k3") is None


def test_file_hash_matches_hashlib(tmp_path):
    import hashlib

    data = bytes(range(256)) * 40_000  # 10 MB: several read chunks
    _touch(tmp_path / "w.bin", data)
    assert file_sha256(tmp_path / "w.bin") == hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- output folder and image sizes
def test_writes_that_fail_name_the_file_and_leave_no_temporary_file(tmp_path):
    from unlearn_guard.errors import OutputError
    from unlearn_guard.files import write_text_atomic

    (tmp_path / "blocker").write_text("a file where a folder should be")
    with pytest.raises(OutputError) as caught:
        write_text_atomic(tmp_path / "blocker" / "gate.json", "{}")
    message = str(caught.value)
    assert f"could not write '{tmp_path / 'blocker' / 'gate.json'}'" in message and "is a file" in message
    assert ".tmp" not in message and isinstance(caught.value, OSError)
    (tmp_path / "report.html").mkdir()  # the rename fails after the temporary file was written
    with pytest.raises(OutputError, match="report.html"):
        write_text_atomic(tmp_path / "report.html", "<html>")
    assert not list(tmp_path.glob(".*.tmp"))  # cleaned up
    assert write_text_atomic(tmp_path / "new" / "ok.json", "{}").read_text() == "{}"  # negative control


def test_unwritable_output_folders_are_found_without_leaving_anything(tmp_path):
    from unlearn_guard.errors import OutputError
    from unlearn_guard.files import check_writable_folder

    (tmp_path / "blocker").write_text("x")
    with pytest.raises(OutputError, match=r"--output: '.*blocker/out' cannot be created: '.*blocker' is a file"):
        check_writable_folder(tmp_path / "blocker" / "out", "--output")
    with pytest.raises(OutputError, match=r"--output: '.*blocker' is a file; expected a writable folder"):
        check_writable_folder(tmp_path / "blocker", "--output")
    with pytest.raises(OutputError, match=r"--output: cannot write '.*blocker/p.json': '.*blocker' is a file"):
        check_writable_folder(tmp_path / "blocker", "--output", file=tmp_path / "blocker" / "p.json")
    check_writable_folder(tmp_path / "a" / "b" / "c", "--output")  # writable: proven, nothing created
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def test_model_resolution_comes_from_the_config_files(tmp_path):
    import json

    from unlearn_guard.gate.inputs import model_resolution, resolve_model_source
    from unlearn_guard.world import load_world_model

    assert model_resolution(resolve_model_source("shapes-world")) == load_world_model().resolution == 32
    (tmp_path / "unet").mkdir()
    (tmp_path / "vae").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"sample_size": 64}))
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"block_out_channels": [128, 256, 512, 512]}))
    assert model_resolution(str(tmp_path)) == 512  # SD 1.4's layout
    (tmp_path / "vae" / "config.json").write_text("{broken")
    assert model_resolution(str(tmp_path)) is None
    assert model_resolution("no-such-org/no-such-model") is None
