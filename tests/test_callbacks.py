"""Training callbacks: the ProbeMonitor core (scripted d_N values where only decisions matter,
real probes on the tiny model where measurement matters) and each adapter in a tiny run with
the real library (accelerate, transformers.Trainer, lightning.Trainer)."""

from __future__ import annotations

import copy
import inspect
import json
import math
import re
import warnings

import pytest
import torch
import torch.nn.functional as F

from unlearn_guard.callbacks import (
    MonitorConfig,
    ProbeMonitor,
    ProbeRecord,
    ProbeWarning,
    Signal,
    decisive_value,
    default_probe_fn,
)
from unlearn_guard.callbacks import decision as decision_module
from unlearn_guard.config import InversionConfig, ProbeConfig
from unlearn_guard.errors import InputError, InsufficientDataError, ModelError, NonFiniteError
from unlearn_guard.models import DiffusionModel, snapshot_module_state
from unlearn_guard.probe import ProbeFailure, probe
from unlearn_guard.results import ImageProbe, ProbeResult, SetProbe
from unlearn_guard.stats import MemoryDistanceResult

# The cheapest probe that still runs every stage: 4 steps, K=1, averaging and regularisation on.
CHEAP = ProbeConfig(
    preset="custom",
    inversion=InversionConfig(num_steps=4, renoise_steps=1, early_window=(0, 2), late_window=(0, 2)),
    n_normal=20,
    bootstrap_samples=20,
    progress=False,
    # A random-weight tiny model's seeds are not typical N(0, I) draws: under the default band its memory
    # score is undefined (tests/test_controls.py). These tests check mechanics, so the band is open.
    memory_typical_sigmas=1e6,
)
# An early stop that fires at the second probe whatever d_N is: nothing beats the first by 1e9.
STOP_AT_SECOND_PROBE = dict(patience=1, min_delta=1e9)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core box the second thread
    spins: one cheap probe took 4.8 s with 2 threads and 0.7 s with 1 (measured beside a training job)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def concept(tiny_images):
    return tiny_images[:2]


@pytest.fixture()
def reference(tiny_images):
    return tiny_images[2:]


def make_monitor(model, concept, reference, probe_fn=None, name="probe", **config) -> ProbeMonitor:
    """A monitor deciding on d_N unless `signal` says otherwise (fake_result scripts d_N)."""
    config.setdefault("probe", CHEAP)
    config.setdefault("signal", "d_n")
    return ProbeMonitor(model, concept, "a red circle", reference=reference, reference_prompts="a blue square",
                        config=MonitorConfig(**config), probe_fn=probe_fn, name=name)


def fake_result(d_n: float, low: float | None = None, high: float | None = None) -> ProbeResult:
    """A ProbeResult with a chosen d_N and interval, [d_N - 0.1, d_N + 0.1] unless given (for tests
    of decisions, not of measurement)."""
    low = d_n - 0.1 if low is None else low
    high = d_n + 0.1 if high is None else high
    erased = SetProbe("erased", [ImageProbe("a.png", "p", "a.png", "0" * 64, 100.0, 20.0),
                                 ImageProbe("b.png", "p", "b.png", "1" * 64, 102.0, 22.0)], 0, 0.0)
    distance = MemoryDistanceResult(d_n, low, high, 0.95, "mofc", 2, 2, 20, 20, d_n, 1.0)
    return ProbeResult(erased, None, distance, torch.zeros(20), CHEAP)


def scripted(values):
    """A probe_fn that returns the given outcomes in turn: a d_N, a (d_N, low, high) tuple, or an
    exception instance (raised)."""
    queue = list(values)
    calls = []

    def probe_fn(model, images, reference, config):
        calls.append(config)
        value = queue.pop(0)
        if isinstance(value, BaseException):
            raise value
        return fake_result(*value) if isinstance(value, tuple) else fake_result(value)

    probe_fn.calls = calls
    return probe_fn


def denoising_loss(unet: torch.nn.Module, embeddings: torch.Tensor, latents: torch.Tensor, noise: torch.Tensor):
    """The epsilon-prediction loss at a fixed timestep: enough to move the weights."""
    t = torch.full((latents.shape[0],), 500, dtype=torch.long)
    pred = unet(latents + noise, t, encoder_hidden_states=embeddings.expand(latents.shape[0], -1, -1)).sample
    return F.mse_loss(pred, noise)


# --------------------------------------------------------------------------- the core


def test_probes_exactly_at_multiples_of_n_once_per_step(tiny_model, concept, reference):
    fn = scripted([1.0, 1.1, 1.2, 1.3])
    monitor = make_monitor(tiny_model, concept, reference, fn, every_n_steps=3)
    returned = {}
    for step in [0, 1, 2, 3, 3, 4, 5, 6, 7, 8, 9, 9, 10]:  # repeats: gradient accumulation, resumes
        record = monitor.maybe_probe(step)
        if record is not None:
            returned[step] = record.d_n
    assert returned == {0: 1.0, 3: 1.1, 6: 1.2, 9: 1.3}
    assert [r.step for r in monitor.history] == [0, 3, 6, 9] and len(fn.calls) == 4
    assert fn.calls[0] is CHEAP


def test_history_records_what_probe_measures(tiny_model, concept, reference):
    monitor = make_monitor(tiny_model, concept, reference, every_n_steps=5)
    assert monitor.maybe_probe(4) is None
    record = monitor.maybe_probe(5)
    direct = probe(tiny_model, concept, "a red circle", reference=reference, reference_prompts="a blue square",
                   config=CHEAP)
    md = direct.memory_distance
    assert record == monitor.history[-1] and record.step == 5 and record.ok and record.error is None
    assert (record.d_n, record.ci_low, record.ci_high) == (md.value, md.ci_low, md.ci_high)
    assert record.erased_nll_mean == pytest.approx(float(direct.erased.nll.mean()), rel=1e-12)
    assert record.erased_psnr_mean == pytest.approx(float(direct.erased.psnr.mean()), rel=1e-12)
    assert record.seconds > 0 and monitor.overhead_seconds == record.seconds
    assert monitor.latest_d_n == record.d_n
    json.dumps(monitor.state_dict())  # JSON as is


def test_probing_mid_training_changes_nothing_but_the_history(tiny_components, concept, reference):
    """Weights, flags, modes and the training's random stream are the same with and without probes;
    the probe runs without autograd."""
    grad_enabled = []

    def spy(*args):
        grad_enabled.append(torch.is_grad_enabled())
        torch.randn(8)  # a custom probe may draw from the global generator; training must not notice
        return default_probe_fn(*args)

    def train(with_probes: bool):
        model = DiffusionModel.from_components(**copy.deepcopy(tiny_components))
        model.vae.requires_grad_(False)
        model.text_encoder.requires_grad_(False).eval()
        model.unet.train()
        model.unet.conv_in.requires_grad_(False)  # a mixed set of flags
        embeddings = model.encode_prompts(["a red circle"])
        monitor = make_monitor(model, concept, reference, spy, every_n_steps=2)
        optimizer = torch.optim.SGD([p for p in model.unet.parameters() if p.requires_grad], lr=0.1)
        torch.manual_seed(0)
        for step in range(1, 4):
            loss = denoising_loss(model.unet, embeddings, torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if with_probes:
                before = snapshot_module_state(*model.modules())
                monitor.maybe_probe(step)
                assert snapshot_module_state(*model.modules()).differences(before) == []
        return snapshot_module_state(*model.modules()), torch.rand(3), monitor

    probed, probed_rng, monitor = train(True)
    plain, plain_rng, _ = train(False)
    assert [r.step for r in monitor.history] == [2] and monitor.history[0].ok
    assert probed.differences(plain) == [] and torch.equal(probed_rng, plain_rng)
    assert grad_enabled == [False]


NAN = math.nan


@pytest.mark.parametrize(
    "config, values, stop_at, reason",
    [
        # (MonitorConfig fields, probe outcomes: d_N or (d_N, low, high), 1-based probe after which
        #  should_stop turns True, reason). Plain d_N values get the interval [d_N - 0.1, d_N + 0.1].
        # The target counts only when the whole interval is past it (low in "max", high in "min").
        ({"target": 2.0}, [(1.0, 0.8, 1.2), (2.1, 1.9, 2.3), (2.2, 2.0, 2.4)], 3, "target"),
        ({"target": 2.0}, [(2.5, 2.0, 3.0)], 1, "target"),                           # low == target
        ({"target": 2.0}, [(2.5, 1.99, 3.0)], None, None),                           # point far past: not enough
        ({"target": 2.0}, [(2.5, 2.1, 2.9), (1.0, 0.8, 1.2)], 1, "target"),          # stays stopped
        ({"target": 0.5, "mode": "min"}, [(0.4, 0.3, 0.6), (0.4, 0.3, 0.5)], 2, "target"),  # high <= target
        # Patience compares conservative ends: the 4 + 4 case, the point creeps up inside
        # wide intervals whose low end does not move, so nothing improved.
        ({"patience": 2}, [(1.00, 0.93, 1.01), (1.01, 0.93, 1.04), (1.02, 0.92, 1.06)], 3, "patience"),
        ({"patience": 2}, [(1.0, 0.90, 1.1), (0.98, 0.91, 1.05), (0.97, 0.89, 1.05), (0.99, 0.92, 1.06)],
         None, None),                                                                    # low rose twice
        ({"patience": 2, "min_delta": 0.05}, [(1.0, 0.9, 1.1), (1.1, 0.94, 1.2), (1.2, 0.95, 1.3)], 3, "patience"),
        ({"patience": 2, "min_delta": 0.05}, [(1.0, 0.9, 1.1), (1.1, 0.94, 1.2), (1.2, 0.96, 1.3)], None, None),
        ({"patience": 1}, [1.0, 1.0], 2, "patience"),                                  # equal is no improvement
        ({"patience": 2}, [1.0, 1.2, 1.1, 1.15], 4, "patience"),
        ({"patience": 2}, [1.0, 1.2, 1.1, 1.3, 1.25], None, None),                     # 1.3 resets the count
        ({"patience": 1, "mode": "min"}, [(1.0, 0.9, 1.1), (0.8, 0.5, 1.2)], 2, "patience"),   # high rose: worse
        ({"patience": 1, "mode": "min"}, [(1.0, 0.9, 1.1), (1.05, 0.95, 1.08)], None, None),   # high fell: better
        ({"patience": 1, "mode": "min", "min_delta": 0.25}, [(1.0, 0.9, 1.1), (0.75, 0.7, 0.9)], 2, "patience"),
        ({"patience": 1, "mode": "min", "min_delta": 0.25}, [(1.0, 0.9, 1.1), (0.7, 0.6, 0.8)], None, None),
        ({"patience": 1}, [1.0, RuntimeError("boom"), 1.5], None, None),               # failures don't count
        ({"patience": 1}, [1.0, RuntimeError("boom"), 0.9], 3, "patience"),
        ({"target": 2.0, "patience": 1}, [1.0, 0.9], 2, "patience"),
        ({}, [1.0, 0.5, 0.1, 0.0], None, None),                                        # no criteria: never
        # No interval (bootstrap off): the point value is its own conservative end.
        ({"target": 2.0}, [(2.0, NAN, NAN)], 1, "target"),
        ({"patience": 1}, [(1.0, NAN, NAN), (1.01, NAN, NAN)], None, None),
    ],
)
def test_early_stopping_decides_on_the_interval(tiny_model, concept, reference, config, values, stop_at, reason):
    monitor = make_monitor(tiny_model, concept, reference, scripted(values), every_n_steps=1, **config)
    decisions = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(1, len(values) + 1):
            decisions.append(monitor.step(step))
    expected = [stop_at is not None and i >= stop_at for i in range(1, len(values) + 1)]
    assert decisions == expected
    assert monitor.stop_reason == reason
    failures = sum(isinstance(v, Exception) for v in values)
    assert sum(issubclass(w.category, ProbeWarning) for w in caught) == failures


@pytest.mark.parametrize(
    "mode, signal, expected",
    [("max", Signal(1.0, 0.9, 1.2), 0.9), ("min", Signal(1.0, 0.9, 1.2), 1.2),
     ("max", Signal(1.0, NAN, NAN), 1.0), ("min", Signal(1.0, NAN, NAN), 1.0)],
)
def test_decisive_value_is_the_conservative_end(mode, signal, expected):
    assert decisive_value(signal, mode) == expected


def test_every_decision_reads_the_signal_through_one_function(tiny_model, concept, reference, monkeypatch):
    """Swapping `decisive_value` (a new signal, another rule) changes target, patience and the
    weight together: no decision reads d_N on its own."""
    outcomes = [(1.5, 1.0, 2.0), (2.2, 1.9, 2.5)]
    config = dict(every_n_steps=1, target=2.0, patience=5)
    by_interval = make_monitor(tiny_model, concept, reference, scripted(outcomes), **config)
    by_interval.step(1)
    assert by_interval.regularization_weight == pytest.approx(1.0)     # gap = 2.0 - 1.0 = scale
    assert not by_interval.step(2)                                      # low 1.9 < 2.0
    assert by_interval.best_bound == 1.9

    monkeypatch.setattr(decision_module, "decisive_value", lambda signal, mode: signal.value)
    by_point = make_monitor(tiny_model, concept, reference, scripted(outcomes), **config)
    by_point.step(1)
    assert by_point.regularization_weight == pytest.approx(0.5)        # gap = 2.0 - 1.5
    assert by_point.step(2) and by_point.stop_reason == "target"       # 2.2 >= 2.0
    assert by_point.best_bound == 2.2


@pytest.mark.parametrize(
    "config, outcome, expected",
    [
        # w = w_min + (w_max - w_min) * clip(gap / scale, 0, 1); gap from the conservative end b
        # (low in "max", high in "min"); scale defaults to |target - 1|
        ({"target": 3.0}, None, 1.0),                                       # before any probe
        ({}, (1.5, 1.4, 1.6), 1.0),                                             # no target
        ({"target": 3.0}, (1.2, 1.0, 1.4), 1.0),                            # still remembers
        ({"target": 3.0}, (2.5, 2.0, 3.0), 0.5),
        ({"target": 3.0}, (3.5, 3.0, 4.0), 0.0),
        ({"target": 3.0}, (3.2, 2.9, 3.5), pytest.approx(0.05)),           # point past, low not
        ({"target": 3.0}, (4.5, 4.0, 5.0), 0.0),
        ({"target": 3.0}, (0.7, 0.5, 0.9), 1.0),                            # clipped at w_max
        ({"target": 3.0, "regularization_min": 0.2, "regularization_max": 2.0}, (2.5, 2.0, 3.0), 1.1),
        ({"target": 3.0, "regularization_scale": 4.0}, (2.5, 2.0, 3.0), 0.25),
        ({"target": 0.5, "mode": "min"}, (0.6, 0.4, 0.75), 0.5),            # gap = high - target
        ({"target": 1.0}, (0.7, 0.5, 0.9), 0.5),                            # |target - 1| = 0: scale 1
    ],
)
def test_regularization_weight_schedule(tiny_model, concept, reference, config, outcome, expected):
    monitor = make_monitor(tiny_model, concept, reference, scripted([] if outcome is None else [outcome]),
                           every_n_steps=1, **config)
    if outcome is not None:
        monitor.probe_now(1)
    assert monitor.regularization_weight == pytest.approx(expected, abs=1e-12)


def test_weight_keeps_the_last_good_value_after_a_failure(tiny_model, concept, reference):
    monitor = make_monitor(tiny_model, concept, reference, scripted([(2.1, 2.0, 2.2), ValueError("bad")]),
                           every_n_steps=1, target=3.0)
    monitor.probe_now(1)
    with pytest.warns(ProbeWarning, match="ValueError: bad"):
        monitor.probe_now(2)
    assert monitor.latest_d_n == 2.1 and monitor.latest_signal == Signal(2.1, 2.0, 2.2)
    assert monitor.regularization_weight == pytest.approx(0.5)


def test_state_dict_round_trip_resumes_to_the_same_decision(tiny_model, concept, reference):
    config = dict(every_n_steps=10, patience=2, target=5.0)
    original = make_monitor(tiny_model, concept, reference, scripted([1.0, 1.2, 1.1, 1.15]), **config)
    for step in (10, 20, 30):
        original.maybe_probe(step)
    state = json.loads(json.dumps(original.state_dict()))  # through JSON, as a checkpoint would

    resumed = make_monitor(tiny_model, concept, reference, scripted([1.15]), **config)
    resumed.load_state_dict(state)
    assert resumed.history == original.history
    assert (resumed.best_bound, resumed.probes_without_improvement) == (pytest.approx(1.1), 1)  # low of 1.2
    assert resumed.overhead_seconds == original.overhead_seconds
    assert resumed.maybe_probe(30) is None  # the last recorded step is not probed again
    fresh = make_monitor(tiny_model, concept, reference, scripted([1.15]), **config)
    for monitor in (original, resumed, fresh):
        monitor.maybe_probe(40)
    assert original.stop_reason == resumed.stop_reason == "patience"
    assert not fresh.should_stop  # without the restored counters the decision differs


def test_state_dict_keeps_failures_and_nan_intervals(tiny_model, concept, reference):
    monitor = make_monitor(tiny_model, concept, reference, scripted([RuntimeError("x")]), every_n_steps=1)
    with pytest.warns(ProbeWarning):
        monitor.probe_now(1)
    monitor.history.append(ProbeRecord(2, 1.5, math.nan, math.nan, 90.0, math.inf, 0.1))
    text = json.dumps(monitor.state_dict(), allow_nan=False)
    restored = make_monitor(tiny_model, concept, reference, every_n_steps=1)
    restored.load_state_dict(json.loads(text))
    assert restored.history[0].error == "RuntimeError: x" and restored.history[0].d_n is None
    assert math.isnan(restored.history[1].ci_low) and restored.history[1].erased_psnr_mean == math.inf


def _fail_oom(original):
    def predict(latents, timestep, embeddings):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    return predict


def _return_nan(original):
    def predict(latents, timestep, embeddings):
        return original(latents, timestep, embeddings) * float("nan")
    return predict


def _fail_runtime(original):
    def predict(latents, timestep, embeddings):
        raise RuntimeError("shape mismatch deep inside the UNet")
    return predict


@pytest.mark.parametrize(
    "breaker, error_type, message",
    [(_fail_oom, ProbeFailure, "batch size 1"), (_return_nan, NonFiniteError, "NaN|non-finite|Inf"),
     (_fail_runtime, RuntimeError, "shape mismatch")],
)
def test_a_failing_probe_is_recorded_and_training_goes_on(tiny_model, concept, reference, breaker, error_type, message):
    logged = []
    monitor = make_monitor(tiny_model, concept, reference, every_n_steps=1, target=0.0, log_fn=logged.append)
    tiny_model.unet.train()
    before = snapshot_module_state(*tiny_model.modules())
    tiny_model.predict_noise = breaker(tiny_model.predict_noise)
    with pytest.warns(ProbeWarning, match="step 7 failed"):
        record = monitor.maybe_probe(7)
    assert record.step == 7 and record.d_n is None and record.ci_low is None and not record.ok
    assert record.error.startswith(error_type.__name__ + ":")
    assert re.search(message, record.error)
    assert monitor.history == [record] and monitor.latest_d_n is None and not monitor.should_stop
    assert monitor.overhead_seconds == record.seconds > 0
    assert logged[0]["error"] == record.error and logged[0]["d_n"] is None
    assert snapshot_module_state(*tiny_model.modules()).differences(before) == []


@pytest.mark.parametrize("breaker, error_type", [(_fail_oom, ProbeFailure), (_return_nan, NonFiniteError)])
def test_fatal_reraises_after_recording(tiny_model, concept, reference, breaker, error_type):
    monitor = make_monitor(tiny_model, concept, reference, every_n_steps=1, fatal=True)
    tiny_model.predict_noise = breaker(tiny_model.predict_noise)
    with pytest.raises(error_type):
        monitor.maybe_probe(3)
    assert len(monitor.history) == 1 and monitor.history[0].error.startswith(error_type.__name__)


@pytest.mark.parametrize("fatal", [False, True])
def test_keyboard_interrupt_always_propagates(tiny_model, concept, reference, fatal):
    monitor = make_monitor(tiny_model, concept, reference, scripted([KeyboardInterrupt()]), every_n_steps=1,
                           fatal=fatal)
    with pytest.raises(KeyboardInterrupt):
        monitor.maybe_probe(1)


def test_non_finite_d_n_and_broken_log_fn_do_not_raise(tiny_model, concept, reference):
    def broken_log(record):
        raise OSError("disk full")

    monitor = make_monitor(tiny_model, concept, reference, scripted([math.inf, 1.0]), every_n_steps=1,
                           log_fn=broken_log, patience=1)
    with pytest.warns(ProbeWarning) as caught:
        first = monitor.probe_now(1)
        second = monitor.probe_now(2)
    assert first.error.startswith("NonFiniteError: d_N = inf") and second.d_n == 1.0
    assert any("disk full" in str(w.message) for w in caught)
    assert monitor.best_bound == pytest.approx(0.9) and not monitor.should_stop  # inf never became the best


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"every_n_steps": 0}, "every_n_steps"),
        ({"probe": "nope"}, "unknown preset 'nope'"),
        ({"probe": 3}, "probe"),
        ({"mode": "maximum"}, "mode"),
        ({"target": math.nan}, "target"),
        ({"patience": 0}, "patience"),
        ({"min_delta": -0.1}, "min_delta"),
        ({"regularization_min": 2.0, "regularization_max": 1.0}, "regularization_min"),
        ({"regularization_scale": 0.0}, "regularization_scale"),
        ({"log_fn": "print"}, "log_fn"),
    ],
)
def test_monitor_config_rejects_bad_values(fields, match):
    with pytest.raises(InputError, match=match):
        MonitorConfig(**fields)


def test_monitor_config_defaults_and_json_round_trip():
    config = MonitorConfig()
    assert config.probe.preset == "track" and config.probe.progress is False
    assert config.probe.inversion.num_steps == 20 and config.probe.inversion.renoise_steps == 0
    custom = MonitorConfig(every_n_steps=7, probe=CHEAP, target=2.5, patience=3, min_delta=0.01, mode="min",
                           regularization_scale=2.0, fatal=True, log_fn=print)
    restored = MonitorConfig.from_dict(json.loads(json.dumps(custom.to_dict())))
    assert restored == custom and restored.log_fn is None


def test_monitor_validates_its_inputs_once(tiny_model, tiny_images):
    with pytest.raises(InsufficientDataError, match=r"reference \(R\) has 1"):
        ProbeMonitor(tiny_model, tiny_images[:2], "p", reference=tiny_images[2:3], reference_prompts="r")
    with pytest.raises(InputError, match="4 channels"):
        ProbeMonitor(tiny_model, torch.rand(2, 4, 64, 64), "p", reference=tiny_images[2:], reference_prompts="r")
    with pytest.raises(InputError, match="expected a MonitorConfig"):
        ProbeMonitor(tiny_model, tiny_images[:2], "p", reference=tiny_images[2:], config={"every_n_steps": 1})
    with pytest.warns(UserWarning, match="resiz"):  # resized once, at construction
        monitor = ProbeMonitor(tiny_model, torch.rand(2, 3, 32, 32), "p", reference=tiny_images[2:],
                               reference_prompts="r", config=MonitorConfig(every_n_steps=1, probe=CHEAP))
    assert monitor.images.size == (64, 64) and monitor.images.prompts == ["p", "p"]


def test_metrics_are_keyed_by_the_monitor_name_and_count_failures(tiny_model, concept, reference):
    monitor = make_monitor(tiny_model, concept, reference, scripted([(1.5, 1.4, 1.7), RuntimeError("oom")]),
                           every_n_steps=1, target=2.0, name="circle/fast")
    ok = monitor.probe_now(1)
    assert monitor.metrics(ok) == {
        "circle/fast/d_n": 1.5, "circle/fast/ci_low": 1.4, "circle/fast/ci_high": 1.7,
        "circle/fast/psnr_mean": ok.erased_psnr_mean, "circle/fast/nll_mean": ok.erased_nll_mean,
        "circle/fast/seconds": ok.seconds, "circle/fast/regularization_weight": pytest.approx(0.6),
        "circle/fast/failed": 0.0, "circle/fast/failures": 0.0, "circle/fast/diverged": 0.0,
    }
    with pytest.warns(ProbeWarning, match="circle/fast: probe at step 2 failed"):
        failed = monitor.probe_now(2)
    assert monitor.metrics(failed) == {"circle/fast/failed": 1.0, "circle/fast/failures": 1.0,
                                       "circle/fast/regularization_weight": pytest.approx(0.6)}
    assert (monitor.failures, monitor.consecutive_failures) == (1, 1)


def test_metrics_leave_out_a_missing_interval(tiny_model, concept, reference):
    monitor = make_monitor(tiny_model, concept, reference, scripted([(1.5, NAN, NAN)]), every_n_steps=1)
    metrics = monitor.metrics(monitor.probe_now(1))
    assert metrics["probe/d_n"] == 1.5 and "probe/ci_low" not in metrics and "probe/ci_high" not in metrics


@pytest.mark.parametrize("name", ["", "a b", "/probe", "probe/", "a//b", 3, "dN=1"])
def test_monitor_name_must_work_as_a_metric_prefix(tiny_model, concept, reference, name):
    with pytest.raises(InputError, match="name"):
        make_monitor(tiny_model, concept, reference, every_n_steps=1, name=name)


@pytest.mark.parametrize(
    "outcomes, limit, probed, active",
    [
        # (probe outcomes at steps 1.., max_consecutive_failures, steps probed, active at the end)
        ([RuntimeError("a"), RuntimeError("b"), 1.0, 1.0], 2, [1, 2], False),
        ([RuntimeError("a"), 1.0, RuntimeError("b"), 1.0], 2, [1, 2, 3, 4], True),  # a success resets the count
        ([RuntimeError("a"), RuntimeError("b"), RuntimeError("c"), 1.0], None, [1, 2, 3, 4], True),
    ],
)
def test_max_consecutive_failures_stops_monitoring(tiny_model, concept, reference, outcomes, limit, probed, active):
    monitor = make_monitor(tiny_model, concept, reference, scripted(outcomes), every_n_steps=1,
                           max_consecutive_failures=limit)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(1, len(outcomes) + 1):
            monitor.step(step)
    assert [r.step for r in monitor.history] == probed and monitor.active is active
    assert any("monitoring stops here" in str(w.message) for w in caught) is (not active)
    assert not monitor.should_stop  # disabling monitoring is not a stop decision


def test_max_consecutive_failures_can_raise(tiny_model, concept, reference):
    monitor = make_monitor(tiny_model, concept, reference, scripted([RuntimeError("a"), RuntimeError("out of memory")]),
                           every_n_steps=1, max_consecutive_failures=2, on_max_failures="raise")
    with pytest.warns(ProbeWarning, match="step 1 failed"):
        monitor.step(1)
    with pytest.raises(ProbeFailure, match=r"2 probes in a row failed \(steps \[1, 2\]\).*out of memory") as raised:
        monitor.step(2)
    assert isinstance(raised.value.__cause__, RuntimeError) and len(monitor.history) == 2


def test_probe_warning_points_at_the_callers_line(tiny_model, concept, reference):
    monitor = make_monitor(tiny_model, concept, reference, scripted([RuntimeError("boom")]), every_n_steps=1)
    with pytest.warns(ProbeWarning) as caught:
        line = inspect.currentframe().f_lineno + 1
        monitor.step(1)
    assert (caught[0].filename, caught[0].lineno) == (__file__, line)


def test_misconfiguration_fails_when_the_monitor_is_built(tiny_components, concept, reference, monkeypatch):
    """What would fail every probe is refused up front, naming the problem, before any training."""
    from unlearn_guard.kernels import dispatch as _dispatch

    monkeypatch.setattr(_dispatch, "INTERPRETING", False)  # as without TRITON_INTERPRET=1
    model = DiffusionModel.from_components(**tiny_components)
    with pytest.raises(InputError, match=r"ProbeMonitor 'probe'.*backend='triton'.*TRITON_INTERPRET"):
        make_monitor(model, concept, reference, every_n_steps=1, probe=CHEAP.replace(backend="triton"))
    split = DiffusionModel.from_components(**copy.deepcopy(tiny_components))
    split.text_encoder.to("meta")  # moved after the model was assembled (as a framework may)
    with pytest.raises(ModelError, match="different devices"):
        make_monitor(split, concept, reference, every_n_steps=1)


def test_a_monitor_without_interval_says_it_decides_on_the_point(tiny_model, concept, reference):
    with pytest.warns(ProbeWarning, match="bootstrap_samples=0.*point estimate"):
        make_monitor(tiny_model, concept, reference, every_n_steps=1, patience=2,
                     probe=CHEAP.replace(bootstrap_samples=0))


def test_state_of_another_monitor_is_refused(tiny_model, concept, reference):
    circle = make_monitor(tiny_model, concept, reference, scripted([1.0]), every_n_steps=1, name="circle")
    circle.step(1)
    square = make_monitor(tiny_model, concept, reference, every_n_steps=1, name="square")
    with pytest.raises(InputError, match="belongs to monitor 'circle'; this monitor is 'square'"):
        square.load_state_dict(circle.state_dict())
    assert square.history == []


def test_a_version_1_state_is_read_with_todays_rule(tiny_model, concept, reference):
    """States saved before decisions moved to the interval: counters are recomputed from the history."""
    history = [ProbeRecord(10, 1.00, 0.93, 1.01, 90.0, 30.0, 1.0).to_dict(),
               ProbeRecord(20, 1.02, 0.92, 1.06, 90.0, 30.0, 1.0).to_dict(),
               ProbeRecord(30, None, None, None, None, None, 0.5, "RuntimeError: x").to_dict()]
    old = {"version": 1, "config": {"mode": "max"}, "history": history, "best_d_n": 1.02,
           "probes_without_improvement": 0, "stop_reason": None, "overhead_seconds": 2.5}
    monitor = make_monitor(tiny_model, concept, reference, every_n_steps=10, patience=3)
    monitor.load_state_dict(old)
    assert (monitor.best_bound, monitor.probes_without_improvement) == (0.93, 1)  # the point rose, the low did not
    assert (monitor.failures, monitor.consecutive_failures, monitor.overhead_seconds) == (1, 1, 2.5)


# --------------------------------------------------------------------------- adapters, real libraries


@pytest.fixture()
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState, GradientState, PartialState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def _recording_tracker():
    """An accelerate tracker (the documented custom-tracker API) that keeps what it is given."""
    from accelerate.tracking import GeneralTracker

    class RecordingTracker(GeneralTracker):
        name = "recording"
        requires_logging_directory = False

        def __init__(self) -> None:
            super().__init__()
            self.logged: list[tuple[int | None, dict]] = []

        @property
        def tracker(self):
            return self.logged

        def store_init_configuration(self, values: dict) -> None:
            pass

        def log(self, values: dict, step: int | None = None, **kwargs) -> None:
            self.logged.append((step, dict(values)))

    return RecordingTracker()


def test_accelerate_two_monitors_log_to_the_trackers_and_checkpoint(tiny_components, concept, reference, tmp_path,
                                                                    fresh_accelerate_state):
    from accelerate import Accelerator

    from unlearn_guard.callbacks.loop import AcceleratorProbe

    def build(probe_fn_square):
        components = copy.deepcopy(tiny_components)
        tracker = _recording_tracker()
        accelerator = Accelerator(cpu=True, log_with=[tracker])
        accelerator.init_trackers("erase")
        unet = components.pop("unet")
        unet, optimizer = accelerator.prepare(unet, torch.optim.SGD(unet.parameters(), lr=0.1))
        model = DiffusionModel.from_components(unet=unet, **components)
        circle = AcceleratorProbe(make_monitor(model, concept, reference, every_n_steps=2, name="circle"), accelerator)
        square = AcceleratorProbe(make_monitor(model, concept, reference, probe_fn_square, every_n_steps=3,
                                               name="square"), accelerator)
        return accelerator, tracker, unet, optimizer, model, circle, square

    accelerator, tracker, unet, optimizer, model, circle, square = build(scripted([RuntimeError("oom"), 1.5]))
    accelerator.register_for_checkpointing(circle, square)
    embeddings = model.encode_prompts(["a red circle"])
    initial = snapshot_module_state(unet)
    generator = torch.Generator().manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(1, 7):
            latents, noise = torch.randn(2, 4, 8, 8, generator=generator), torch.randn(2, 4, 8, 8, generator=generator)
            accelerator.backward(denoising_loss(unet, embeddings, latents, noise))
            optimizer.step()
            optimizer.zero_grad()
            line = inspect.currentframe().f_lineno + 1
            assert not circle.step(step) and not square.step(step)
    assert snapshot_module_state(unet).differences(initial)  # it trained
    history = circle.monitor.history
    assert [r.step for r in history] == [2, 4, 6] and all(r.ok for r in history)
    assert len({r.d_n for r in history}) == 3  # each probe saw the weights of its step
    # Every probe reached the tracker at its step, under its monitor's name; the failure too.
    assert [(step, sorted({key.split("/")[0] for key in values})) for step, values in tracker.logged] == [
        (2, ["circle"]), (3, ["square"]), (4, ["circle"]), (6, ["circle"]), (6, ["square"])]
    assert tracker.logged[0][1] == circle.monitor.metrics(history[0])
    assert tracker.logged[1][1] == {"square/failed": 1.0, "square/failures": 1.0, "square/regularization_weight": 1.0}
    assert tracker.logged[4][1]["square/d_n"] == 1.5 and tracker.logged[4][1]["square/failures"] == 1.0
    probe_warnings = [w for w in caught if issubclass(w.category, ProbeWarning)]
    assert [(w.filename, w.lineno) for w in probe_warnings] == [(__file__, line)]  # the loop's line, not the SDK's

    accelerator.save_state(str(tmp_path / "state"))
    accelerator.end_training()
    _, _, _, _, _, circle2, square2 = build(scripted([]))
    circle2.accelerator.register_for_checkpointing(circle2, square2)
    circle2.accelerator.load_state(str(tmp_path / "state"))
    assert circle2.monitor.history == history and square2.monitor.history == square.monitor.history
    assert square2.monitor.failures == 1

    _, _, _, _, _, circle3, square3 = build(scripted([]))
    circle3.accelerator.register_for_checkpointing(square3, circle3)  # swapped: the states would be swapped
    with pytest.raises(InputError, match="belongs to monitor 'circle'; this monitor is 'square'"):
        circle3.accelerator.load_state(str(tmp_path / "state"))


def test_accelerate_refuses_two_probes_with_one_name(tiny_model, concept, reference, fresh_accelerate_state):
    from accelerate import Accelerator

    from unlearn_guard.callbacks.loop import AcceleratorProbe

    accelerator = Accelerator(cpu=True)
    AcceleratorProbe(make_monitor(tiny_model, concept, reference, every_n_steps=2), accelerator)
    with pytest.raises(InputError, match="already has a probe for a monitor named 'probe'"):
        AcceleratorProbe(make_monitor(tiny_model, concept, reference, every_n_steps=3), accelerator)


def test_accelerate_probe_stops_every_process_at_the_target(tiny_model, concept, reference, fresh_accelerate_state):
    from accelerate import Accelerator

    from unlearn_guard.callbacks.loop import AcceleratorProbe

    probing = AcceleratorProbe(
        make_monitor(tiny_model, concept, reference, scripted([1.0, 2.5]), every_n_steps=2, target=2.0,
                     regularization_max=4.0),
        Accelerator(cpu=True),
    )
    assert probing.regularization_weight == 4.0
    stops = [probing.step(step) for step in range(1, 6)]
    assert stops == [False, False, False, True, True]
    assert probing.regularization_weight == 0.0


def test_accelerator_probe_unwraps_and_probes_only_on_the_main_process(tiny_model, concept, reference):
    from types import SimpleNamespace

    from unlearn_guard.callbacks.loop import AcceleratorProbe

    class Wrapper(torch.nn.Module):  # stands in for DDP: its forward would wait for the other ranks
        def __init__(self, module):
            super().__init__()
            self.module = module

    unet = tiny_model.unet
    tiny_model.unet = Wrapper(unet)
    fn = scripted([1.0])
    worker = SimpleNamespace(unwrap_model=lambda m: m.module, is_main_process=False, num_processes=1)
    probing = AcceleratorProbe(make_monitor(tiny_model, concept, reference, fn, every_n_steps=1), worker)
    assert probing.monitor.model.unet is unet
    assert [probing.step(step) for step in (1, 2)] == [False, False]
    assert fn.calls == [] and probing.monitor.history == [] and probing.last_record is None


class _UNetWithLoss(torch.nn.Module):
    """What a transformers.Trainer trains: the tiny UNet, returning {"loss": ...}."""

    def __init__(self, unet: torch.nn.Module, embeddings: torch.Tensor) -> None:
        super().__init__()
        self.unet = unet
        self.embeddings = embeddings  # a plain attribute: not trained, not saved

    def forward(self, latents: torch.Tensor, noise: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": denoising_loss(self.unet, self.embeddings, latents, noise)}


def _toy_rows(count: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [{"latents": torch.randn(4, 8, 8, generator=g), "noise": torch.randn(4, 8, 8, generator=g)}
            for _ in range(count)]


def _run_trainer(model, wrapper, monitors, output_dir, max_steps, resume=None):
    """A transformers.Trainer run with one ProbeTrainerCallback per monitor, and a recorder of
    on_log listed *before* them, where the report_to integrations sit."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from unlearn_guard.callbacks.transformers import ProbeTrainerCallback

    class OnLogRecorder(TrainerCallback):
        def __init__(self) -> None:
            self.logs: list[tuple[int, dict]] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append((state.global_step, dict(logs)))

    recorder = OnLogRecorder()
    args = TrainingArguments(output_dir=str(output_dir), max_steps=max_steps, per_device_train_batch_size=2,
                             learning_rate=1e-3, report_to=[], use_cpu=True, save_strategy="steps", save_steps=2,
                             logging_steps=50, disable_tqdm=True, dataloader_num_workers=0)
    trainer = Trainer(model=wrapper, args=args, train_dataset=_toy_rows(16), callbacks=[recorder])
    for monitor in monitors:
        trainer.add_callback(ProbeTrainerCallback(monitor, trainer))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1
        trainer.train(resume_from_checkpoint=resume)
    probe_warnings = [(w.filename, w.lineno, str(w.message)) for w in caught if issubclass(w.category, ProbeWarning)]
    return trainer, recorder, probe_warnings, line


def test_transformers_two_monitors_log_through_on_log_and_resume_from_anywhere(
        tiny_components, concept, reference, tmp_path, fresh_accelerate_state):
    import shutil

    from transformers.trainer_callback import TrainerState

    model = DiffusionModel.from_components(**copy.deepcopy(tiny_components))
    wrapper = _UNetWithLoss(model.unet, model.encode_prompts(["a red circle"]))

    def monitors(square_outcomes):
        # circle: real probes, stops at its third probe (nothing beats the first by 1e9);
        # square: scripted, its first probe fails.
        return (make_monitor(model, concept, reference, every_n_steps=2, name="circle", patience=2, min_delta=1e9),
                make_monitor(model, concept, reference, scripted(square_outcomes), every_n_steps=3, name="square"))

    circle, square = monitors([RuntimeError("out of memory")])
    trainer, recorder, probe_warnings, line = _run_trainer(model, wrapper, [circle, square], tmp_path / "run", 4)
    assert trainer.state.global_step == 4 and [r.step for r in circle.history] == [2, 4]
    assert [r.step for r in square.history] == [3] and not square.history[0].ok
    # on_log of a callback listed before the probes (like TensorBoard or W&B) receives every probe
    # at its step, and log_history holds the same entries.
    received = [(step, logs) for step, logs in recorder.logs if any(k.startswith(("circle/", "square/")) for k in logs)]
    assert [step for step, _ in received] == [2, 3, 4]
    for (step, logs), record in zip([received[0], received[2]], circle.history):
        assert logs.items() >= {"circle/d_n": record.d_n, "circle/ci_low": record.ci_low,
                                "circle/ci_high": record.ci_high, "circle/failed": 0.0}.items()
    assert received[1][1].items() >= {"square/failed": 1.0, "square/failures": 1.0}.items()
    in_history = [entry for entry in trainer.state.log_history if any(k.startswith(("circle/", "square/")) for k in entry)]
    assert [{**logs, "step": step} for step, logs in received] == in_history
    assert probe_warnings == [(__file__, line, "square: probe at step 3 failed and was skipped: "
                                               "RuntimeError: out of memory")]

    # Resume from a copy of the checkpoint outside output_dir, in a new run with new monitors.
    moved = tmp_path / "elsewhere" / "step-4"
    shutil.copytree(tmp_path / "run" / "checkpoint-4", moved)
    shutil.rmtree(tmp_path / "run")
    saved = TrainerState.load_from_json(str(moved / "trainer_state.json")).stateful_callbacks
    assert saved["unlearn_guard.ProbeMonitor/circle"]["probes_without_improvement"] == 1
    circle, square = monitors([1.0])
    triangle = make_monitor(model, concept, reference, every_n_steps=100, name="triangle")  # not in the first run
    trainer, recorder, probe_warnings, line = _run_trainer(model, wrapper, [circle, square, triangle],
                                                           tmp_path / "resumed", 10, resume=str(moved))
    # The restored patience counter stops it at its next probe (a fresh one would run to step 10).
    assert trainer.state.global_step == 6 and circle.stop_reason == "patience"
    assert [r.step for r in circle.history] == [2, 4, 6] and [r.step for r in square.history] == [3, 6]
    assert square.failures == 1
    logged_steps = [entry["step"] for entry in trainer.state.log_history if "circle/d_n" in entry]
    assert logged_steps == [r.step for r in circle.history]  # log_history and the monitor agree
    assert probe_warnings == [(__file__, line, "resuming at step 4, but the checkpoint holds no state for monitor "
                                               "'triangle': its history, patience counter and stop decision start over")]


def test_transformers_refuses_two_probes_with_one_name(tiny_components, concept, reference, tmp_path,
                                                      fresh_accelerate_state):
    model = DiffusionModel.from_components(**copy.deepcopy(tiny_components))
    wrapper = _UNetWithLoss(model.unet, model.encode_prompts(["a red circle"]))
    twins = [make_monitor(model, concept, reference, every_n_steps=2) for _ in range(2)]
    with pytest.raises(InputError, match="2 probe callbacks share the monitor name 'probe'"):
        _run_trainer(model, wrapper, twins, tmp_path, 4)


class _LitUNet:
    """Built lazily so that importing this test file does not need lightning."""

    @staticmethod
    def make(unet: torch.nn.Module, embeddings: torch.Tensor):
        import lightning.pytorch as pl

        class LitUNet(pl.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.unet = unet
                self.embeddings = embeddings

            def training_step(self, batch, batch_idx):
                latents, noise = batch
                return denoising_loss(self.unet, self.embeddings, latents, noise)

            def on_train_start(self) -> None:
                self.unet.train()

            def configure_optimizers(self):
                return torch.optim.SGD(self.unet.parameters(), lr=1e-3)

        return LitUNet()


def _fit(model, embeddings, monitors, tmp_path, run, max_steps, ckpt_path=None):
    """A lightning.Trainer fit with one ProbeLightningCallback per monitor, a CSVLogger at the
    default log_every_n_steps (50), and a checkpoint every 4 steps."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader, TensorDataset

    from unlearn_guard.callbacks.lightning import ProbeLightningCallback

    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(16, 4, 8, 8, generator=g), torch.randn(16, 4, 8, 8, generator=g))
    callbacks = [ProbeLightningCallback(monitor) for monitor in monitors]
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, callbacks=[*callbacks, checkpoints],
                         logger=CSVLogger(tmp_path / "logs", name=run), enable_checkpointing=True,
                         enable_progress_bar=False, enable_model_summary=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1
        trainer.fit(_LitUNet.make(model.unet, embeddings), DataLoader(data, batch_size=1), ckpt_path=ckpt_path)
    probe_warnings = [(w.filename, w.lineno, str(w.message)) for w in caught if issubclass(w.category, ProbeWarning)]
    return trainer, callbacks, probe_warnings, line


def _csv_rows(path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended")
@pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated")  # lightning 2.6.6 with torch 2.13
def test_lightning_two_monitors_log_every_probe_at_its_step_and_resume(tiny_components, concept, reference,
                                                                       tmp_path):
    model = DiffusionModel.from_components(**copy.deepcopy(tiny_components))
    embeddings = model.encode_prompts(["a red circle"])

    def monitors(square_outcomes):
        # circle: real probes, stops at its third probe; square: scripted, its first probe fails.
        return (make_monitor(model, concept, reference, every_n_steps=2, name="circle", patience=2, min_delta=1e9),
                make_monitor(model, concept, reference, scripted(square_outcomes), every_n_steps=3, name="square"))

    circle, square = monitors([RuntimeError("out of memory")])
    trainer, _, probe_warnings, line = _fit(model, embeddings, [circle, square], tmp_path, "first", max_steps=4)
    assert [r.step for r in circle.history] == [2, 4] and [r.step for r in square.history] == [3]
    rows = _csv_rows(tmp_path / "logs" / "first" / "version_0" / "metrics.csv")
    by_step = {}
    for row in rows:
        by_step.setdefault(int(row["step"]), {}).update({k: v for k, v in row.items() if v != ""})
    # Every probe reached the CSV at its own step with its interval, whatever log_every_n_steps is.
    for record in circle.history:
        logged = by_step[record.step]
        assert (float(logged["circle/d_n"]), float(logged["circle/ci_low"]), float(logged["circle/ci_high"])) == \
            pytest.approx((record.d_n, record.ci_low, record.ci_high))
    assert float(by_step[3]["square/failed"]) == 1.0 and "square/d_n" not in by_step[3]
    assert trainer.callback_metrics["circle/d_n"] == pytest.approx(circle.history[-1].d_n)
    assert probe_warnings == [(__file__, line, "square: probe at step 3 failed and was skipped: "
                                               "RuntimeError: out of memory")]

    # Resume both from the checkpoint at step 4 (one fit, two state keys), with new monitors.
    circle, square = monitors([1.5])
    trainer, callbacks, probe_warnings, _ = _fit(model, embeddings, [circle, square], tmp_path, "resumed",
                                                 max_steps=10, ckpt_path=str(tmp_path / "ckpt" / "epoch=0-step=4.ckpt"))
    assert sorted(callback.state_key for callback in callbacks) == [
        "ProbeLightningCallback{'name': 'circle'}", "ProbeLightningCallback{'name': 'square'}"]
    # The restored patience counter stops it at its next probe (a fresh one would run to step 10).
    assert trainer.global_step == 6 and circle.stop_reason == "patience"
    assert [r.step for r in circle.history] == [2, 4, 6] and [r.step for r in square.history] == [3, 6]
    assert square.failures == 1 and probe_warnings == []
    rows = _csv_rows(tmp_path / "logs" / "resumed" / "version_0" / "metrics.csv")
    assert {(int(row["step"]), key) for row in rows for key in ("circle/d_n", "square/d_n") if row.get(key)} == {
        (6, "circle/d_n"), (6, "square/d_n")}


def test_lightning_checks_the_monitor_when_training_starts(tiny_components, concept, reference, tmp_path):
    """A part left behind when the framework moves the module is caught before the first step."""
    model = DiffusionModel.from_components(**copy.deepcopy(tiny_components))
    embeddings = model.encode_prompts(["a red circle"])
    monitor = make_monitor(model, concept, reference, every_n_steps=1)
    model.vae.to("meta")  # stands in for a VAE outside the LightningModule, left on another device
    with pytest.raises(ModelError, match="different devices"):
        _fit(model, embeddings, [monitor], tmp_path, "broken", max_steps=4)
    assert monitor.history == []


# --------------------------------------------------------------------------- the memory score decides by default


def fake_memory_result(memory: float, low: float, high: float, d_n: float = 1.0) -> ProbeResult:
    """A ProbeResult with a chosen memory score and interval (and a d_N that does not matter)."""
    from unlearn_guard.signal import MemoryScoreResult

    result = fake_result(d_n)
    result.memory = MemoryScoreResult(memory, low, high, 0.95, 100, 2, 2, 0, 330.0, 360.0, 31.0, 5.0, (memory, memory))
    return result


def test_the_default_monitor_decides_on_the_memory_score_from_above(tiny_model, concept, reference):
    outcomes = [(0.9, 0.8, 1.0), (0.45, 0.3, 0.6), (0.3, 0.2, 0.45)]
    queue = list(outcomes)
    monitor = ProbeMonitor(tiny_model, concept, "a red circle", reference=reference, reference_prompts="q",
                           config=MonitorConfig(every_n_steps=1, probe=CHEAP, target=0.5),
                           probe_fn=lambda *args: fake_memory_result(*queue.pop(0)))
    assert monitor.config.signal == "memory" and monitor.config.mode == "min"
    assert monitor.regularization_weight == 1.0  # before any probe
    monitor.probe_now(1)
    assert not monitor.should_stop and monitor.regularization_weight == 1.0  # upper end 1.0: gap 0.5 = scale
    monitor.probe_now(2)
    # point 0.45 is below the target, the upper end 0.6 is not: no stop; w = (0.6 - 0.5) / 0.5
    assert not monitor.should_stop and monitor.regularization_weight == pytest.approx(0.2)
    monitor.probe_now(3)
    assert monitor.should_stop and monitor.stop_reason == "target" and monitor.regularization_weight == 0.0
    record = monitor.history[-1]
    assert (record.memory, record.memory_low, record.memory_high) == (0.3, 0.2, 0.45)
    assert monitor.metrics(record)["probe/memory_high"] == 0.45 and monitor.latest_memory == 0.3
    again = ProbeMonitor(tiny_model, concept, "a red circle", reference=reference, reference_prompts="q",
                         config=MonitorConfig(every_n_steps=1, probe=CHEAP, target=0.5))
    again.load_state_dict(json.loads(json.dumps(monitor.state_dict())))
    assert again.should_stop and again.history[-1].memory_high == 0.45


def test_a_probe_without_the_deciding_signal_is_a_recorded_failure(tiny_model, concept, reference):
    monitor = ProbeMonitor(tiny_model, concept, "a red circle", reference=reference, reference_prompts="q",
                           config=MonitorConfig(every_n_steps=1, probe=CHEAP, target=0.5),
                           probe_fn=lambda *args: fake_result(1.2))  # d_N only, no memory score
    with pytest.warns(ProbeWarning, match="returned no memory score"):
        record = monitor.probe_now(1)
    assert not record.ok and "InsufficientDataError" in record.error and monitor.failures == 1


def test_a_real_probe_records_both_signals(tiny_model, concept, reference):
    monitor = ProbeMonitor(tiny_model, concept, "a red circle", reference=reference, reference_prompts="a blue square",
                           config=MonitorConfig(every_n_steps=1, probe=CHEAP))
    record = monitor.probe_now(1)
    direct = probe(tiny_model, concept, "a red circle", reference=reference, reference_prompts="a blue square",
                   config=CHEAP)
    assert record.memory == direct.memory.value and record.memory_high == direct.memory.ci_high
    assert record.d_n == direct.memory_distance.value
