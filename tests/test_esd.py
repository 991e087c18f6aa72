"""ESD-LoRA trainer on the tiny model: what is trained, the target formula against independent
computations (diffusers' DDIMScheduler for x_t, the bare UNet for the predictions), determinism,
save/load through diffusers and our loader, the memory-aware option, validation, callbacks."""

from __future__ import annotations

import json
import math

import pytest
import torch

from unlearn_guard.errors import InputError, ModelError
from unlearn_guard.models import DiffusionModel, load_lora_adapter
from unlearn_guard.models.tiny import build_tiny_components
from unlearn_guard.trainers import ESD_TARGET_MODULES, ESDConfig, ESDResult, esd_lora_erase, save_esd_adapter
from unlearn_guard.trainers.esd import draw_esd_example
from unlearn_guard.schedule import ddim_schedule

from conftest import assert_close

CONCEPT = "a red circle"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions gain nothing from a second thread, and on a shared 2-core machine two
    threads ran ESD about 10x slower than one (OpenMP spinning against other jobs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fresh_model(seed: int = 0) -> DiffusionModel:
    """A new tiny model per test: ESD adds an adapter to the UNet in place."""
    return DiffusionModel.from_components(**build_tiny_components(seed))


def quick(**changes) -> ESDConfig:
    settings = dict(concept=CONCEPT, method="esd-x", iterations=3, ddim_steps=5, lr=1e-3)
    settings.update(changes)
    return ESDConfig(**settings)


def lora_state(model: DiffusionModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.unet.state_dict().items() if ".lora_" in k}


def base_state(model: DiffusionModel) -> dict[str, torch.Tensor]:
    """Base weights under their original names (peft moves them to `<layer>.base_layer.*`)."""
    return {k.replace(".base_layer", ""): v for k, v in model.unet.state_dict().items() if ".lora_" not in k}


def bare_eps(unet: torch.nn.Module, z: torch.Tensor, timestep: int, embeddings: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        t = torch.full((z.shape[0],), timestep, dtype=torch.long)
        return unet(z, t, encoder_hidden_states=embeddings).sample


# ---------------------------------------------------------------------------------------- what is trained
def test_only_lora_changes_and_flags_are_restored():
    model = fresh_model()
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    model.unet.train()
    model.unet.down_blocks[0].eval()  # mixed flags must come back as they were
    model.unet.conv_in.weight.requires_grad_(False)
    grad_flags = {name: p.requires_grad for name, p in model.unet.named_parameters()}
    mode_flags = {name: m.training for name, m in model.unet.named_modules()}

    result = esd_lora_erase(model, quick(method="esd-u", iterations=4, lr=1e-2), progress=False)

    after = base_state(model)
    assert after.keys() == before.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == [], f"base weights changed: {changed[:5]}"
    lora = lora_state(model)
    assert any(k.endswith("lora_B.esd.weight") and v.abs().max() > 0 for k, v in lora.items())
    assert result.trainable_parameters == sum(v.numel() for v in lora.values())

    params = {n.replace(".base_layer", ""): p for n, p in model.unet.named_parameters() if ".lora_" not in n}
    assert {n: p.requires_grad for n, p in params.items()} == grad_flags
    modules = dict(model.unet.named_modules())
    for name, flag in mode_flags.items():
        assert modules[name].training == flag, name  # the LoRA wrapper follows the layer it wraps
        if name + ".base_layer" in modules:
            assert modules[name + ".base_layer"].training == flag, name


@pytest.mark.parametrize("method", ["esd-x", "esd-u"])
def test_lora_sits_exactly_on_the_method_layers(method):
    from peft.tuners.tuners_utils import BaseTunerLayer

    model = fresh_model()
    candidates = [n for n, m in model.unet.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    esd_lora_erase(model, quick(method=method, iterations=1, ddim_steps=1), progress=False)
    injected = sorted(n for n, m in model.unet.named_modules() if isinstance(m, BaseTunerLayer))
    if method == "esd-x":
        expected = [n for n in candidates if ".attn2." in n]
        assert all(".attn2." in n for n in injected)
    else:
        untouched = ("attn2", "time_embedding", "conv_out")
        expected = [n for n in candidates if not any(part in n for part in untouched)]
        assert not any("attn2" in n for n in injected)
    assert injected == sorted(expected)
    assert all(n.endswith(ESD_TARGET_MODULES[method]) for n in injected)


# ---------------------------------------------------------------------------------------- the algorithm
def test_example_matches_diffusers_ddim_and_the_esd_formula():
    """x_t from diffusers' DDIMScheduler with CFG, target = eps_u - eta (eps_c - eps_u) from the bare UNet."""
    from diffusers import DDIMScheduler

    config = quick(negative_guidance=2.0, start_guidance=3.0, ddim_steps=5, seed=11)
    model = fresh_model()
    embeddings = model.encode_prompts(["", CONCEPT])
    schedule = ddim_schedule(model.scheduler_config, config.ddim_steps)
    example = draw_esd_example(model, config, schedule, embeddings, torch.Generator().manual_seed(config.seed))

    # independent: same draws (stop step, then z_T), diffusers' sampler, the bare UNet
    g = torch.Generator().manual_seed(config.seed)
    stop = int(torch.randint(config.ddim_steps, (1,), generator=g))
    z = torch.randn((1, 4, 8, 8), generator=g)
    scheduler = DDIMScheduler.from_config(model.scheduler_config, clip_sample=False)
    scheduler.set_timesteps(config.ddim_steps)
    for t in scheduler.timesteps[:stop]:
        eps_u, eps_c = bare_eps(model.unet, z.expand(2, -1, -1, -1), int(t), embeddings).chunk(2)
        z = scheduler.step(eps_u + 3.0 * (eps_c - eps_u), t, z).prev_sample
    timestep = int(scheduler.timesteps[stop])
    eps_u, eps_c = bare_eps(model.unet, z.expand(2, -1, -1, -1), timestep, embeddings).chunk(2)
    target = eps_u - 2.0 * (eps_c - eps_u)

    assert example.timestep == timestep
    assert_close(example.latents, z)
    assert_close(example.target, target)
    assert not torch.allclose(target, eps_u - 1.0 * (eps_c - eps_u))  # eta matters here

    # the trainer's first loss is MSE(eps_theta = base at start, target) on that same example
    losses = []
    esd_lora_erase(fresh_model(), config.__class__(**{**config.to_dict(), "iterations": 1}),
                   on_step=lambda step, loss: losses.append(loss), progress=False)
    expected = torch.nn.functional.mse_loss(eps_c, target).item()
    assert losses[0] == pytest.approx(expected, rel=1e-5)


def test_frozen_predictions_use_the_base_model_after_training():
    model = fresh_model()
    config = quick(iterations=8, lr=1e-2)
    esd_lora_erase(model, config, progress=False)
    embeddings = model.encode_prompts(["", CONCEPT])
    z = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(5))
    base = fresh_model()
    trained_eps = model.predict_noise(z, 501, embeddings[1:])
    assert (trained_eps - base.predict_noise(z, 501, embeddings[1:])).abs().max() > 1e-3  # LoRA is active

    schedule = ddim_schedule(model.scheduler_config, 5)
    for seed in (5, 6):
        got = draw_esd_example(model, config, schedule, embeddings, torch.Generator().manual_seed(seed))
        want = draw_esd_example(base, config, schedule, embeddings, torch.Generator().manual_seed(seed))
        assert got.timestep == want.timestep
        assert_close(got.latents, want.latents)
        assert_close(got.target, want.target)
    assert torch.equal(model.predict_noise(z, 501, embeddings[1:]), trained_eps)  # adapter back on


def test_lora_prediction_moves_toward_the_target_on_held_out_examples():
    model = fresh_model()
    config = quick(iterations=40, lr=2e-3)
    embeddings = model.encode_prompts(["", CONCEPT])
    schedule = ddim_schedule(model.scheduler_config, config.ddim_steps)
    g = torch.Generator().manual_seed(999)  # other draws than training (seed 0)
    held_out = [draw_esd_example(model, config, schedule, embeddings, g) for _ in range(6)]

    def error() -> float:
        return sum(
            torch.nn.functional.mse_loss(model.predict_noise(e.latents, e.timestep, embeddings[1:]), e.target).item()
            for e in held_out
        )

    before = error()
    result = esd_lora_erase(model, config, progress=False)
    after = error()
    assert after < 0.5 * before, (before, after)
    assert sum(result.losses[-10:]) < sum(result.losses[:10])


def test_same_seed_same_weights_other_seed_differs():
    runs = {}
    for index, (key, seed) in enumerate((("a", 3), ("b", 3), ("c", 4))):
        model = fresh_model()
        torch.manual_seed(100 + index)  # the global stream differs per run: only config.seed may matter
        result = esd_lora_erase(model, quick(seed=seed), progress=False)
        runs[key] = (lora_state(model), result.losses)
    for name in runs["a"][0]:
        assert torch.equal(runs["a"][0][name], runs["b"][0][name]), name
    assert runs["a"][1] == runs["b"][1]
    assert any(not torch.equal(runs["a"][0][k], runs["c"][0][k]) for k in runs["a"][0])


def test_global_rng_is_left_alone():
    model = fresh_model()  # building calls torch.manual_seed itself
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    esd_lora_erase(model, quick(iterations=1, ddim_steps=2), progress=False)
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------------------------------- saving
@pytest.mark.parametrize("method", ["esd-x", "esd-u"])
def test_saved_adapter_reloads_in_diffusers_and_in_our_loader(method, tmp_path):
    from diffusers import StableDiffusionPipeline

    model = fresh_model()
    # alpha != rank: a save without the LoRA config as metadata would reload with alpha = rank
    config = quick(method=method, iterations=4, lr=1e-2, rank=4, lora_alpha=8.0)
    esd_lora_erase(model, config, progress=False)
    folder = save_esd_adapter(model, tmp_path / "esd")

    z = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(1))
    embeddings = model.encode_prompts([CONCEPT, "a blue square"])
    expected = model.predict_noise(z, 501, embeddings)
    assert (expected - fresh_model().predict_noise(z, 501, embeddings)).abs().max() > 1e-3

    pipe = StableDiffusionPipeline(
        **build_tiny_components(0), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.load_lora_weights(str(folder))
    assert_close(DiffusionModel.from_pipeline(pipe).predict_noise(z, 501, embeddings), expected)

    components = build_tiny_components(0)
    components["unet"] = load_lora_adapter(components["unet"], folder)
    assert_close(DiffusionModel.from_components(**components).predict_noise(z, 501, embeddings), expected)

    record = json.loads((folder / "esd_config.json").read_text())
    assert ESDConfig.from_dict(record["config"]) == config
    assert record["lora_target_modules"] == sorted(ESD_TARGET_MODULES[method])


def test_save_needs_an_adapter(tmp_path):
    with pytest.raises(ModelError, match="adapter_name"):
        save_esd_adapter(fresh_model(), tmp_path)


# ---------------------------------------------------------------------------------------- memory seeds
def test_memory_seeds_start_some_trajectories_and_change_the_result():
    seeds = torch.randn((3, 4, 8, 8), generator=torch.Generator().manual_seed(7))
    config = quick(iterations=8, lr=1e-2, memory_weight=2.0, memory_fraction=0.5)
    plain_model, memory_model = fresh_model(), fresh_model()
    with pytest.warns(UserWarning, match="no memory_seeds"):
        plain = esd_lora_erase(plain_model, config, progress=False)
    with_memory = esd_lora_erase(memory_model, config, memory_seeds=seeds, progress=False)
    assert plain.memory_iterations == []
    assert 0 < len(with_memory.memory_iterations) < config.iterations
    plain_lora, memory_lora = lora_state(plain_model), lora_state(memory_model)
    assert any(not torch.equal(plain_lora[k], memory_lora[k]) for k in plain_lora)

    everything = esd_lora_erase(fresh_model(), quick(iterations=3, memory_weight=1.0, memory_fraction=1.0),
                                memory_seeds=seeds, progress=False)
    assert everything.memory_iterations == [0, 1, 2]


def test_memory_example_starts_from_a_given_seed():
    model = fresh_model()
    seeds = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(7))
    config = quick(ddim_steps=1, memory_weight=1.0, memory_fraction=1.0)  # 1 step: x_t = z_T
    schedule = ddim_schedule(model.scheduler_config, 1)
    example = draw_esd_example(model, config, schedule, model.encode_prompts(["", CONCEPT]),
                               torch.Generator().manual_seed(0), seeds)
    assert example.from_memory
    assert any(torch.equal(example.latents[0], s) for s in seeds)


@pytest.mark.parametrize(
    "seeds, match",
    [
        (torch.zeros(2, 4, 16, 16), "memory_seeds"),
        (torch.zeros(4, 8, 8), "memory_seeds"),
        (torch.full((1, 4, 8, 8), float("nan")), "NaN"),
    ],
)
def test_bad_memory_seeds_are_refused(seeds, match):
    with pytest.raises(InputError, match=match):
        esd_lora_erase(fresh_model(), quick(memory_weight=1.0), memory_seeds=seeds, progress=False)


def test_memory_seeds_without_weight_warn():
    with pytest.warns(UserWarning, match="memory_weight"):
        result = esd_lora_erase(fresh_model(), quick(iterations=1, ddim_steps=1),
                                memory_seeds=torch.zeros(1, 4, 8, 8), progress=False)
    assert result.memory_iterations == []


# ---------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "field, value",
    [
        ("concept", ""),
        ("concept", 3),
        ("method", "esd-full"),
        ("negative_guidance", -1.0),
        ("negative_guidance", float("nan")),
        ("start_guidance", -0.5),
        ("iterations", 0),
        ("iterations", 2.5),
        ("lr", 0.0),
        ("lr", float("inf")),
        ("rank", 0),
        ("rank", True),
        ("lora_alpha", -1.0),
        ("ddim_steps", 0),
        ("seed", -1),
        ("memory_weight", -0.1),
        ("memory_fraction", 1.5),
    ],
)
def test_invalid_config_names_the_field(field, value):
    settings = {"concept": CONCEPT, field: value}
    with pytest.raises(InputError, match=f"'{field}'"):
        ESDConfig(**settings)


def test_config_defaults_and_json_round_trip():
    config = ESDConfig(CONCEPT)
    assert (config.method, config.negative_guidance, config.start_guidance, config.iterations, config.ddim_steps) == (
        "esd-x", 1.0, 3.0, 1000, 50)
    assert config.lora_alpha == config.rank == 4
    assert ESDConfig.from_json(config.to_json()) == config
    with pytest.raises(InputError, match="unknown fields"):
        ESDConfig.from_dict({"concept": CONCEPT, "eta": 1.0})


def test_refuses_a_unet_that_already_has_adapters():
    from peft import LoraConfig, get_peft_model

    model = fresh_model()
    esd_lora_erase(model, quick(iterations=1, ddim_steps=1), progress=False)
    with pytest.raises(ModelError, match="already carries adapters"):
        esd_lora_erase(model, quick(iterations=1, ddim_steps=1), progress=False)

    wrapped = fresh_model()
    wrapped.unet = get_peft_model(wrapped.unet, LoraConfig(r=2, target_modules=["to_q"]))
    with pytest.raises(ModelError, match="already carries adapters"):
        esd_lora_erase(wrapped, quick(iterations=1, ddim_steps=1), progress=False)


# ---------------------------------------------------------------------------------------- callbacks
def test_on_step_once_per_iteration_with_finite_losses():
    model = fresh_model()
    base = fresh_model()
    z = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(2))
    embeddings = model.encode_prompts([CONCEPT])
    calls, sees_adapter = [], []

    def on_step(step: int, loss: float) -> None:
        calls.append((step, loss))
        model.unet.eval()  # a probe may switch modes; training must carry on
        moved = (model.predict_noise(z, 501, embeddings) - base.predict_noise(z, 501, embeddings)).abs().max()
        sees_adapter.append(float(moved) > 0)

    # the training forward is the one that builds a graph: it must run in train mode every time
    train_modes = []
    model.unet.register_forward_pre_hook(
        lambda module, args: train_modes.append(module.training) if torch.is_grad_enabled() else None
    )
    result = esd_lora_erase(model, quick(iterations=5, lr=1e-2), on_step=on_step, progress=False)
    assert train_modes == [True] * 5
    assert [step for step, _ in calls] == list(range(5))
    assert [loss for _, loss in calls] == result.losses
    assert all(math.isfinite(loss) for loss in result.losses)
    assert all(sees_adapter)
    assert isinstance(result, ESDResult) and json.loads(result.to_json())["adapter_name"] == "esd"
    assert not model.unet.training  # the tiny model came in eval mode


def test_exception_in_on_step_propagates_and_flags_are_restored():
    model = fresh_model()
    flags = [p.requires_grad for p in model.unet.parameters()]

    def on_step(step: int, loss: float) -> None:
        if step == 1:
            raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        esd_lora_erase(model, quick(iterations=5), on_step=on_step, progress=False)
    base_params = [p for n, p in model.unet.named_parameters() if ".lora_" not in n]
    assert [p.requires_grad for p in base_params] == flags
    assert not any(m.training for m in model.unet.modules())


@pytest.mark.parametrize(
    "returns, iterations_run, stopped_early",
    [
        # (what on_step returns at iterations 0.., iterations run of 5, stopped_early)
        ([None, None, True], 3, True),
        ([False, True], 2, True),
        ([None, None, None, None, True], 5, False),        # True at the last iteration: ran them all anyway
        ([1, "yes", object(), None, None], 5, False),      # only True stops (a returned record does not)
    ],
)
def test_on_step_returning_true_stops_training(returns, iterations_run, stopped_early):
    model = fresh_model()
    answers = iter(returns)
    result = esd_lora_erase(model, quick(iterations=5), on_step=lambda step, loss: next(answers, None),
                            progress=False)
    assert len(result.losses) == iterations_run and result.stopped_early is stopped_early
    assert json.loads(result.to_json())["stopped_early"] is stopped_early
    assert not any(m.training for m in model.unet.modules())  # flags restored on the early exit too


# ---------------------------------------------------------------------------------------- memory loss
def _memory_monitor(model, tiny_images, outcomes, keep_seeds=True):
    """A monitor on the tiny model whose probe returns scripted memory scores and fixed seeds."""
    import dataclasses

    from unlearn_guard.callbacks import MonitorConfig, ProbeMonitor
    from test_callbacks import CHEAP, fake_memory_result

    seeds = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(9))
    queue = list(outcomes)

    def probe_fn(*args):
        result = fake_memory_result(*queue.pop(0))
        result.erased.seeds = seeds.clone()
        return result

    probe_config = dataclasses.replace(CHEAP, keep_seeds=keep_seeds)
    config = MonitorConfig(every_n_steps=1, probe=probe_config, target=0.5)
    return ProbeMonitor(model, tiny_images[:2], CONCEPT, reference=tiny_images[2:], reference_prompts="a blue square",
                        config=config, probe_fn=probe_fn)


def test_memory_loss_config_round_trips_through_json():
    from unlearn_guard.losses import AnchorPathConfig, InversionLikelihoodConfig, SeedRecallConfig

    for loss in (SeedRecallConfig(steps=4, tau=0.2), InversionLikelihoodConfig(steps=3, statistic="gaussian_w2"),
                 AnchorPathConfig(steps=4, timesteps=3, random_paths=1, min_noise=0.2, anchor="a square")):
        config = quick(memory_loss=loss, memory_loss_weight="monitor", memory_loss_every=2)
        assert ESDConfig.from_json(config.to_json()) == config


def test_memory_loss_trains_only_lora_and_changes_the_update(tiny_images):
    from unlearn_guard.losses import InversionLikelihoodConfig

    loss = InversionLikelihoodConfig(steps=2, target_mean=1e4)
    lora, results = {}, {}
    for name, changes in (("plain", {}), ("weight 0", dict(memory_loss=loss, memory_loss_weight=0.0)),
                          ("weight 1", dict(memory_loss=loss, memory_loss_weight=1.0))):
        model = fresh_model()
        before = {k: v.clone() for k, v in model.unet.state_dict().items()}
        images = tiny_images[:2] if changes else None
        results[name] = esd_lora_erase(model, quick(iterations=2, lr=1e-2, **changes), progress=False,
                                       memory_images=images)
        after = base_state(model)
        assert [k for k in before if not torch.equal(before[k], after[k])] == [], name
        lora[name] = lora_state(model)
    same = [torch.equal(lora["plain"][k], lora["weight 0"][k]) for k in lora["plain"]]
    assert all(same)  # control: weight 0 adds nothing, the draws are the same
    moved = [not torch.equal(lora["plain"][k], lora["weight 1"][k]) for k in lora["plain"]]
    assert any(moved)
    assert results["plain"].losses[0] == results["weight 1"].losses[0]  # same first example
    assert all(v is not None and v > 0 for v in results["weight 1"].memory_losses)
    assert results["weight 1"].memory_loss_weights == [1.0, 1.0]
    assert results["weight 0"].memory_losses == [None, None] and results["plain"].memory_losses == []
    assert json.loads(results["weight 1"].to_json())["memory_losses"][0] > 0


def test_the_monitor_hands_seeds_weights_the_term_and_stops_on_the_memory_target(tiny_images):
    from unlearn_guard.losses import SeedRecallConfig

    model = fresh_model()
    # memory score M (point, low, high) at steps 0, 1, 2: weight 1, then (0.6 - 0.5) / 0.5 = 0.2, then stop
    monitor = _memory_monitor(model, tiny_images, [(0.9, 0.8, 1.0), (0.45, 0.3, 0.6), (0.3, 0.2, 0.45)])
    config = quick(iterations=5, memory_loss=SeedRecallConfig(steps=4, tau=1.0), memory_loss_weight="monitor")
    result = esd_lora_erase(model, config, monitor=monitor, progress=False)
    assert [r.step for r in monitor.history] == [0, 1, 2]
    assert len(result.losses) == 2 and result.stopped_early and result.stop_reason == "target"
    assert result.memory_loss_weights == [1.0, pytest.approx(0.2)]
    assert all(v is not None and 0 < v <= 1 for v in result.memory_losses)
    assert monitor.latest_seeds_step == 2 and monitor.latest_seeds.shape == (2, 4, 8, 8)


def test_a_monitor_already_at_its_target_means_no_update(tiny_images):
    model = fresh_model()
    monitor = _memory_monitor(model, tiny_images, [(0.3, 0.2, 0.45)])
    result = esd_lora_erase(model, quick(iterations=3), monitor=monitor, progress=False)
    assert result.losses == [] and result.stopped_early and result.stop_reason == "target"
    assert all(v.abs().max() == 0 for k, v in lora_state(model).items() if "lora_B" in k)


@pytest.mark.parametrize(
    "changes, monitor_kind, match",
    [
        (dict(memory_loss_weight="monitor"), None, "got 'monitor' but no monitor"),
        (dict(), None, "seed_recall reads the seeds"),
        (dict(), "no seeds", "keep its seeds"),
        (dict(memory_loss_weight=-1.0), None, "memory_loss_weight"),
        (dict(memory_loss_every=0), None, "memory_loss_every"),
    ],
)
def test_memory_loss_misuse_is_refused(changes, monitor_kind, match, tiny_images):
    from unlearn_guard.losses import SeedRecallConfig

    model = fresh_model()
    monitor = None if monitor_kind is None else _memory_monitor(model, tiny_images, [(0.9, 0.8, 1.0)], keep_seeds=False)
    with pytest.raises(InputError, match=match):
        esd_lora_erase(model, quick(memory_loss=SeedRecallConfig(steps=4), **changes), monitor=monitor, progress=False)


def test_an_anchored_inversion_loss_reads_the_monitor_reference(tiny_images):
    from unlearn_guard.losses import InversionLikelihoodConfig

    loss = InversionLikelihoodConfig(steps=2, keep_weight=1.0)
    with pytest.raises(InputError, match="anchors on the monitor's reference"):
        esd_lora_erase(fresh_model(), quick(memory_loss=loss), memory_images=tiny_images[:2], progress=False)
    model = fresh_model()
    monitor = _memory_monitor(model, tiny_images, [(0.9, 0.8, 1.0)] * 3)
    result = esd_lora_erase(model, quick(iterations=2, memory_loss=loss, memory_loss_weight="monitor"),
                            monitor=monitor, progress=False)
    assert result.memory_loss_weights == [1.0, 1.0] and all(v is not None for v in result.memory_losses)


def test_the_anchor_path_loss_follows_the_monitor_seeds_and_reference(tiny_images):
    """noise='seeds' reads the monitor's seeds (a run on fixed noise ends elsewhere) and anchors
    on its reference images; noise='fresh' with a fixed anchor needs no monitor at all."""
    from unlearn_guard.losses import AnchorPathConfig

    lora = {}
    for noise in ("seeds", "fresh"):
        model = fresh_model()
        monitor = _memory_monitor(model, tiny_images, [(0.9, 0.8, 1.0)] * 3)
        loss = AnchorPathConfig(steps=4, timesteps=1, noise=noise)
        result = esd_lora_erase(model, quick(iterations=2, memory_loss=loss, memory_loss_weight="monitor"),
                                monitor=monitor, progress=False)
        assert result.memory_loss_weights == [1.0, 1.0] and all(v is not None and v > 0 for v in result.memory_losses)
        lora[noise] = lora_state(model)
    assert any(not torch.equal(lora["seeds"][k], lora["fresh"][k]) for k in lora["seeds"])
    alone = AnchorPathConfig(steps=4, noise="fresh", anchor="a blue square", keep_weight=0.0)
    result = esd_lora_erase(fresh_model(), quick(iterations=1, memory_loss=alone), memory_images=tiny_images[:2],
                            progress=False)
    assert result.memory_losses[0] is not None and result.memory_losses[0] > 0


@pytest.mark.parametrize(
    "loss, monitor_kind, match",
    [
        (dict(), None, "anchor_path with noise='seeds' follows the seeds"),
        (dict(), "no seeds", "anchor_path with noise='seeds' needs the monitor's probe to keep its seeds"),
        (dict(steps=6), "seeds", "anchor_path steps=6 differs from the probe's 4 inversion steps"),
        (dict(noise="fresh"), None, "anchor_path anchors on the monitor's reference images"),
    ],
)
def test_anchor_path_misuse_is_refused(loss, monitor_kind, match, tiny_images):
    from unlearn_guard.losses import AnchorPathConfig

    model = fresh_model()
    monitor = None if monitor_kind is None else _memory_monitor(model, tiny_images, [(0.9, 0.8, 1.0)],
                                                                keep_seeds=monitor_kind == "seeds")
    images = tiny_images[:2] if monitor is None else None
    with pytest.raises(InputError, match=match):
        esd_lora_erase(model, quick(memory_loss=AnchorPathConfig(**{"steps": 4, **loss}), memory_loss_weight=1.0),
                       monitor=monitor, memory_images=images, progress=False)


def test_the_anchor_path_loss_trains_on_the_monitor_loss_images(tiny_images):
    """With separate loss_images (3) the loss pairs their latents with their seeds (a loss built on
    the monitor's 2 decision images would not match 3 seed rows), while the decisions read the 2."""
    import dataclasses

    from unlearn_guard.callbacks import MonitorConfig, ProbeMonitor
    from unlearn_guard.losses import AnchorPathConfig
    from test_callbacks import CHEAP
    from test_monitor_guards import more_images

    model = fresh_model()
    monitor = ProbeMonitor(model, tiny_images[:2], CONCEPT, reference=tiny_images[2:], reference_prompts="a blue square",
                           loss_images=more_images(3, 11), loss_prompts=CONCEPT,
                           config=MonitorConfig(every_n_steps=1, probe=dataclasses.replace(CHEAP, keep_seeds=True)))
    loss = AnchorPathConfig(steps=CHEAP.inversion.num_steps, timesteps=1)
    result = esd_lora_erase(model, quick(iterations=2, memory_loss=loss, memory_loss_weight=1.0), monitor=monitor,
                            progress=False)
    assert all(v is not None and v > 0 for v in result.memory_losses)
    assert monitor.latest_seeds.shape[0] == 3 and all(r.loss_memory is not None for r in monitor.history)
