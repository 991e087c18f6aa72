"""Memory losses on the tiny model: gradients against central finite differences in float64,
weights / flags / modes / random streams / the monitor's state left alone, batch equals single,
validation, and NaN becoming an error that says where."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from unlearn_guard.errors import InputError, NonFiniteError
from unlearn_guard.losses import (
    LOSSES,
    AnchorPathConfig,
    AnchorPathLoss,
    InversionLikelihoodConfig,
    InversionLikelihoodLoss,
    SeedRecallConfig,
    SeedRecallLoss,
    concept_latents,
    memory_loss_config_from_dict,
    nll_statistics,
    normal_nll_statistics,
)
from unlearn_guard.models import DiffusionModel, snapshot_module_state
from unlearn_guard.models.tiny import build_tiny_components
from unlearn_guard.trainers.esd import ESD_TARGET_MODULES

PROMPT = "a red circle"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def lora_model(dtype: torch.dtype = torch.float64) -> DiffusionModel:
    """The tiny model with a rank-2 LoRA on cross-attention (esd-x layers), base frozen, lora_B
    drawn at random (peft starts it at zero, where lora_A would get no gradient)."""
    from peft import LoraConfig

    model = DiffusionModel.from_components(**build_tiny_components(0))
    torch.manual_seed(7)
    model.unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=list(ESD_TARGET_MODULES["esd-x"])))
    model.to(dtype=dtype)
    generator = torch.Generator().manual_seed(3)
    for name, p in model.unet.named_parameters():
        p.requires_grad_(".lora_" in name)
        if ".lora_B" in name:
            with torch.no_grad():
                p.copy_(0.3 * torch.randn(p.shape, generator=generator, dtype=torch.float64))
    return model


def inputs(model: DiffusionModel, tiny_images: torch.Tensor, count: int = 2):
    latents = concept_latents(model, tiny_images[:count] * 2 - 1)  # (B, 4, 8, 8)
    embeddings = model.encode_prompts([PROMPT] * count)  # (B, L, 32)
    seeds = torch.randn(latents.shape, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    return latents, embeddings, seeds


def lora_params(model: DiffusionModel) -> list[torch.nn.Parameter]:
    return [p for n, p in model.unet.named_parameters() if ".lora_" in n]


# One row per loss: a name, and a builder of the loss module on (model, latents, embeddings, seeds).
def anchored(model, latents, embeddings, seeds):
    """The hinge with the anchor on two other images; the LoRA then moves, so the anchor is not at its minimum."""
    other = concept_latents(model, torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4)) * 2 - 1)
    loss = InversionLikelihoodLoss(model, latents, embeddings,
                                   InversionLikelihoodConfig(steps=2, target_mean=1e4, keep_weight=1.0),
                                   reference_latents=other, reference_embeddings=model.encode_prompts(["a square"]))
    with torch.no_grad():
        for name, p in model.unet.named_parameters():
            if ".lora_B" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(6), dtype=p.dtype))
    return loss


def anchor_path(model, latents, embeddings, seeds, **changes):
    """The seed-path anchor loss on two reference images; steps == timesteps, so every call
    covers the same timesteps (finite differences compare calls)."""
    reference = concept_latents(model, torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4)) * 2 - 1)
    config = AnchorPathConfig(**{"steps": 2, "timesteps": 2, **changes})
    return AnchorPathLoss(model, latents, embeddings, config, seeds=seeds, reference_latents=reference,
                          reference_embeddings=model.encode_prompts(["a square", "a star"]),
                          null_embedding=model.encode_prompts([""]),
                          anchor_embeddings=None if config.anchor is None else model.encode_prompts([config.anchor]))


CASES = {
    "anchor_path": anchor_path,
    "anchor_path_fresh": lambda m, z, c, s: anchor_path(m, z, c, s, noise="fresh"),
    "anchor_path_null": lambda m, z, c, s: anchor_path(m, z, c, s, null_weight=0.5),
    "anchor_path_guided": lambda m, z, c, s: anchor_path(m, z, c, s, guidance=2.0, null_weight=0.5),
    "inversion_anchored": anchored,
    "seed_recall": lambda m, z, c, s: SeedRecallLoss(m, z, c, SeedRecallConfig(steps=2, tau=1.0), seeds=s),
    "inversion_hinge": lambda m, z, c, s: InversionLikelihoodLoss(
        m, z, c, InversionLikelihoodConfig(steps=2, target_mean=1e4)),
    "inversion_gaussian_w2": lambda m, z, c, s: InversionLikelihoodLoss(
        m, z, c, InversionLikelihoodConfig(steps=2, statistic="gaussian_w2")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_matches_central_finite_differences_in_float64(case, tiny_images):
    model = lora_model()
    latents, embeddings, seeds = inputs(model, tiny_images)
    loss_fn = CASES[case](model, latents, embeddings, seeds)
    params = lora_params(model)
    loss = loss_fn()
    assert loss.dtype == torch.float64 and loss.ndim == 0 and torch.isfinite(loss)
    grads = torch.autograd.grad(loss, params)
    assert any(g.abs().max() > 0 for g in grads)

    generator = torch.Generator().manual_seed(5)
    for _ in range(2):  # two random directions through every LoRA parameter
        direction = [torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in params]
        analytic = sum(float((g * d).sum()) for g, d in zip(grads, direction))
        h = 1e-5
        values = []
        with torch.no_grad():
            for sign in (1, -1):
                for p, d in zip(params, direction):
                    p.add_(sign * h * d)
                values.append(float(loss_fn()))
                for p, d in zip(params, direction):
                    p.sub_(sign * h * d)
        numeric = (values[0] - values[1]) / (2 * h)
        tolerance = 1e-6 * abs(analytic) + 1e-12
        assert abs(numeric - analytic) <= tolerance, (case, numeric, analytic)
        assert abs(numeric - 1.01 * analytic) > tolerance  # negative control: a 1% wrong gradient fails


@pytest.mark.parametrize("case", sorted(CASES))
def test_only_the_adapter_gets_gradients_and_nothing_else_changes(case, tiny_images):
    model = lora_model(torch.float32)
    latents, embeddings, seeds = inputs(model, tiny_images)
    seeds = seeds.float()
    seeds_before = seeds.clone()
    model.unet.train()
    model.unet.down_blocks[0].eval()  # mixed modes must stay as they were
    loss_fn = CASES[case](model, latents, embeddings, seeds)  # (the anchored case moves the LoRA once, here)
    state = snapshot_module_state(model.unet)
    weights = {k: v.clone() for k, v in model.unet.state_dict().items()}
    cpu_rng = torch.get_rng_state()

    loss_fn().backward()

    assert all(torch.equal(v, weights[k]) for k, v in model.unet.state_dict().items())
    assert snapshot_module_state(model.unet) == state
    assert torch.equal(torch.get_rng_state(), cpu_rng)
    assert torch.equal(seeds, seeds_before)
    for name, p in model.unet.named_parameters():
        if ".lora_" in name:
            assert p.grad is not None, name
        else:
            assert p.grad is None, f"frozen {name} got a gradient"
    assert any(p.grad.abs().max() > 0 for p in lora_params(model))
    assert all(p.grad is None for p in model.text_encoder.parameters())
    assert all(p.grad is None for p in model.vae.parameters())


def test_batch_equals_singles(tiny_images):
    model = lora_model()
    latents, embeddings, seeds = inputs(model, tiny_images)
    for config in (SeedRecallConfig(steps=2, tau=1.0), InversionLikelihoodConfig(steps=2, target_mean=1e4)):
        kind = LOSSES[config.kind]
        extra = {"seeds": seeds} if config.kind == "seed_recall" else {}
        batch = kind(model, latents, embeddings, config, **extra)()
        singles = [kind(model, latents[i:i + 1], embeddings[i:i + 1], config,
                        **({"seeds": seeds[i:i + 1]} if extra else {}))() for i in range(2)]
        torch.testing.assert_close(batch, torch.stack(singles).mean(), rtol=1e-10, atol=1e-12)


def test_seed_recall_is_one_on_its_own_landing_point_and_falls_away_from_it(tiny_images):
    model = lora_model()
    latents, embeddings, seeds = inputs(model, tiny_images)
    loss_fn = SeedRecallLoss(model, latents, embeddings, SeedRecallConfig(steps=2, tau=0.1), seeds=seeds)
    from unlearn_guard.losses.common import sample

    with torch.no_grad():
        landed = sample(model, loss_fn.schedule, seeds, loss_fn.embeddings, "test")
    at_target = SeedRecallLoss(model, landed, embeddings, SeedRecallConfig(steps=2, tau=0.1), seeds=seeds)
    distance = float((landed - latents).pow(2).mean(dim=(1, 2, 3)).neg().div(0.1).exp().mean())
    with torch.no_grad():
        assert float(at_target()) == pytest.approx(1.0, abs=1e-12)
        assert float(loss_fn()) == pytest.approx(distance, rel=1e-10)


def test_seed_recall_takes_seeds_from_a_callable_skips_diverged_rows_and_is_zero_without(tiny_images):
    model = lora_model()
    latents, embeddings, seeds = inputs(model, tiny_images)
    source = {"seeds": None}
    loss_fn = SeedRecallLoss(model, latents, embeddings, SeedRecallConfig(steps=2, tau=1.0),
                             seeds=lambda: source["seeds"])
    assert float(loss_fn()) == 0.0 and loss_fn.last_used == 0
    broken = seeds.clone()
    broken[1] = float("nan")  # the probe writes NaN rows for images whose inversion diverged
    source["seeds"] = broken
    only_first = SeedRecallLoss(model, latents[:1], embeddings[:1], SeedRecallConfig(steps=2, tau=1.0), seeds=seeds[:1])
    torch.testing.assert_close(loss_fn(), only_first(), rtol=1e-12, atol=0)
    assert loss_fn.last_used == 1
    source["seeds"] = torch.full_like(seeds, float("nan"))
    with pytest.raises(InputError, match="all 2 rows hold NaN"):
        loss_fn()


def test_inversion_targets_default_to_normal_draws_and_read_a_retrained_model_seeds():
    mean, std = normal_nll_statistics(256)
    assert mean == pytest.approx(256 * (0.5 + 0.5 * math.log(2 * math.pi)))
    draws = torch.randn(20_000, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    found_mean, found_std = nll_statistics(draws)  # an independent Monte Carlo check of both
    assert found_mean == pytest.approx(mean, rel=2e-3) and found_std == pytest.approx(std, rel=2e-2)


def test_nan_in_the_model_becomes_an_error_naming_timestep_and_images(tiny_images):
    model = lora_model()
    latents, embeddings, seeds = inputs(model, tiny_images)
    with torch.no_grad():
        next(p for n, p in model.unet.named_parameters() if ".lora_B" in n).fill_(float("nan"))
    with pytest.raises(NonFiniteError, match=r"inversion\) at timestep t=\d+, images \[0, 1\]"):
        InversionLikelihoodLoss(model, latents, embeddings, InversionLikelihoodConfig(steps=2))()
    with pytest.raises(NonFiniteError, match=r"sampling\) at timestep t=\d+"):
        SeedRecallLoss(model, latents, embeddings, SeedRecallConfig(steps=2), seeds=seeds)()


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda m, z, c, s: SeedRecallLoss(m, z[0], c, SeedRecallConfig(steps=2), seeds=s), r"latents: got \(4, 8, 8\)"),
        (lambda m, z, c, s: SeedRecallLoss(m, z[:, :3], c, SeedRecallConfig(steps=2), seeds=s), r"latents: got \(2, 3, 8, 8\)"),
        (lambda m, z, c, s: InversionLikelihoodLoss(m, z.index_fill(0, torch.tensor([1]), float("nan")), c),
         r"latents: rows \[1\] hold NaN"),
        (lambda m, z, c, s: InversionLikelihoodLoss(m, z, c[0]), r"embeddings: got \(16, 32\)"),
        (lambda m, z, c, s: SeedRecallLoss(m, z, c, SeedRecallConfig(steps=2), seeds=s[:1])(), r"seeds: got \(1, 4, 8, 8\)"),
        (lambda m, z, c, s: SeedRecallLoss(m, z, c, SeedRecallConfig(steps=2), seeds="x"), "seeds: got str"),
        (lambda m, z, c, s: SeedRecallLoss(m, z, c, InversionLikelihoodConfig()), "expected a SeedRecallConfig"),
        (lambda m, z, c, s: InversionLikelihoodLoss(m, z[:1], c[:1], InversionLikelihoodConfig(statistic="gaussian_w2")),
         "needs >= 2"),
        (lambda m, z, c, s: InversionLikelihoodLoss(m, z, c, InversionLikelihoodConfig(keep_weight=1.0)),
         "keep_weight > 0 needs reference_latents"),
        (lambda m, z, c, s: InversionLikelihoodLoss(m, z, c, InversionLikelihoodConfig(keep_weight=1.0),
                                                    reference_latents=z[:, :, :4], reference_embeddings=c),
         r"reference_latents: got \(2, 4, 4, 8\)"),
    ],
)
def test_bad_input_is_refused_naming_the_problem(build, match, tiny_images):
    model = lora_model()
    latents, embeddings, seeds = inputs(model, tiny_images)
    with pytest.raises(InputError, match=match):
        build(model, latents, embeddings, seeds)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: SeedRecallConfig(steps=0), "SeedRecallConfig.steps: got 0"),
        (lambda: SeedRecallConfig(tau=-1.0), "SeedRecallConfig.tau: got -1.0"),
        (lambda: SeedRecallConfig(steps=True), "steps: got True"),
        (lambda: InversionLikelihoodConfig(statistic="kl"), "statistic: got 'kl'"),
        (lambda: InversionLikelihoodConfig(target_mean=float("nan")), "target_mean: got nan"),
        (lambda: InversionLikelihoodConfig(target_std=-1.0), "target_std: got -1.0"),
        (lambda: InversionLikelihoodConfig(keep_weight=-1.0), "keep_weight: got -1.0"),
        (lambda: memory_loss_config_from_dict({"kind": "other"}), "kind: got 'other'"),
        (lambda: memory_loss_config_from_dict({"kind": "seed_recall", "sigma": 1}), r"unknown fields \['sigma'\]"),
    ],
)
def test_invalid_config_names_the_field(make, match):
    with pytest.raises(InputError, match=match):
        make()


@pytest.mark.parametrize("config", [SeedRecallConfig(steps=3, tau=0.2, checkpoint=True),
                                    InversionLikelihoodConfig(steps=4, statistic="gaussian_w2", target_mean=300.0,
                                                              target_std=11.0)])
def test_config_json_round_trip_and_cost(config):
    import json

    assert memory_loss_config_from_dict(json.loads(config.to_json())) == config
    assert config.unet_evaluations(5) == 5 * config.steps


def test_checkpointing_gives_the_same_gradient(tiny_images):
    model = lora_model()
    latents, embeddings, _ = inputs(model, tiny_images)
    grads = []
    for checkpoint in (False, True):
        loss = InversionLikelihoodLoss(model, latents, embeddings,
                                       InversionLikelihoodConfig(steps=2, target_mean=1e4, checkpoint=checkpoint))()
        grads.append(torch.autograd.grad(loss, lora_params(model)))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)


def test_the_loss_leaves_the_monitor_state_and_its_seeds_alone(tiny_images):
    import dataclasses
    import json

    from unlearn_guard.callbacks import MonitorConfig, ProbeMonitor
    from test_callbacks import CHEAP, fake_memory_result

    model = lora_model(torch.float32)
    latents, embeddings, seeds = inputs(model, tiny_images)
    found = seeds.float()

    def probe_fn(*args):
        result = fake_memory_result(0.9, 0.8, 1.0)
        result.erased.seeds = found
        return result

    without = ProbeMonitor(model, tiny_images[:2], PROMPT, reference=tiny_images[2:], reference_prompts="q",
                           config=MonitorConfig(every_n_steps=1, probe=CHEAP),
                           probe_fn=lambda *args: fake_memory_result(0.9, 0.8, 1.0))
    without.probe_now(1)
    assert without.latest_seeds is None  # a probe that kept no seeds
    monitor = ProbeMonitor(model, tiny_images[:2], PROMPT, reference=tiny_images[2:], reference_prompts="q",
                           config=MonitorConfig(every_n_steps=1, probe=dataclasses.replace(CHEAP, keep_seeds=True)),
                           probe_fn=probe_fn)
    assert monitor.latest_seeds is None
    monitor.probe_now(3)
    state = json.dumps(monitor.state_dict())
    handed = monitor.latest_seeds
    assert torch.equal(handed, found) and handed is not monitor.latest_seeds and monitor.latest_seeds_step == 3
    loss_fn = SeedRecallLoss(model, latents, embeddings, SeedRecallConfig(steps=2, tau=1.0),
                             seeds=lambda: monitor.latest_seeds)
    loss_fn().backward()
    anchored_fn = anchor_path(model, latents, embeddings, lambda: monitor.latest_seeds)
    anchored_fn().backward()
    assert anchored_fn.last_from_seeds == 2  # it read the monitor's seeds
    assert json.dumps(monitor.state_dict()) == state
    assert torch.equal(monitor.latest_seeds, found) and torch.equal(found, seeds.float())


def test_the_anchor_is_zero_where_it_was_built_and_counts_its_cost(tiny_images):
    model = lora_model()
    latents, embeddings, _ = inputs(model, tiny_images)
    config = InversionLikelihoodConfig(steps=2, target_mean=1e4)
    plain = InversionLikelihoodLoss(model, latents, embeddings, config)
    other = concept_latents(model, tiny_images[2:] * 2 - 1)
    kept = InversionLikelihoodLoss(model, latents, embeddings, dataclasses.replace(config, keep_weight=3.0),
                                   reference_latents=other, reference_embeddings=model.encode_prompts(["a square"]))
    with torch.no_grad():
        torch.testing.assert_close(kept(), plain(), rtol=1e-12, atol=0)  # the model has not moved yet
    assert plain.unet_evaluations == 2 * 2 and kept.unet_evaluations == 2 * (2 + 2)


# ----------------------------------------------------------------------------- the seed-path anchor loss
def test_anchor_path_is_zero_for_an_unmoved_adapter_anchored_on_its_own_prompt(tiny_images):
    """With lora_B = 0 the model is the frozen one: anchored on the concept's own prompt, without
    the empty branch, every term compares a prediction with itself. Moving the adapter makes it
    positive (a loss that could not fail this is no loss)."""
    model = lora_model()
    with torch.no_grad():
        for name, p in model.unet.named_parameters():
            if ".lora_B" in name:
                p.zero_()
    latents, embeddings, seeds = inputs(model, tiny_images)
    loss_fn = AnchorPathLoss(model, latents, embeddings,
                             AnchorPathConfig(steps=2, timesteps=2, anchor=PROMPT, null_weight=0.0, keep_weight=0.0),
                             seeds=seeds, anchor_embeddings=model.encode_prompts([PROMPT]))
    with torch.no_grad():
        assert float(loss_fn()) == pytest.approx(0.0, abs=1e-20)
        next(p for n, p in model.unet.named_parameters() if ".lora_B" in n).add_(0.5)
        assert float(loss_fn()) > 1e-6


def test_anchor_path_recovers_the_seed_noise_and_falls_back_for_diverged_rows(tiny_images):
    model = lora_model()
    latents, embeddings, _ = inputs(model, tiny_images)
    loss_fn = anchor_path(model, latents, embeddings, None)
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(21), dtype=torch.float64)
    alpha = float(loss_fn.schedule.alpha_prod[-1])
    seeds = math.sqrt(alpha) * latents.double() + math.sqrt(1 - alpha) * noise  # a seed on z0's DDIM path
    torch.testing.assert_close(loss_fn._path_noise(seeds), noise, rtol=1e-10, atol=1e-10)
    assert loss_fn.last_from_seeds == 2
    seeds[1] = float("nan")
    path = loss_fn._path_noise(seeds)
    torch.testing.assert_close(path[0], noise[0], rtol=1e-10, atol=1e-10)
    assert torch.equal(path[1], loss_fn.fixed_noise[1]) and loss_fn.last_from_seeds == 1
    assert torch.equal(loss_fn._path_noise(None), loss_fn.fixed_noise) and loss_fn.last_from_seeds == 0
    fresh = anchor_path(model, latents, embeddings, seeds, noise="fresh")
    assert torch.equal(fresh._path_noise(None), fresh.fixed_noise) and fresh.last_from_seeds == 0


def test_anchor_path_cycles_through_the_schedule_and_batch_equals_singles(tiny_images):
    model = lora_model()
    latents, embeddings, seeds = inputs(model, tiny_images)
    both = anchor_path(model, latents, embeddings, seeds, steps=2, timesteps=2, keep_weight=0.0)
    halves = anchor_path(model, latents, embeddings, seeds, steps=2, timesteps=1, keep_weight=0.0)
    with torch.no_grad():
        first, second = float(halves()), float(halves())
        assert first != second  # another timestep
        assert float(both()) == pytest.approx((first + second) / 2, rel=1e-10)
        assert float(halves()) == pytest.approx(first, rel=1e-12)  # back to the first timestep
        singles = [float(anchor_path(model, latents[i:i + 1], embeddings[i:i + 1], seeds[i:i + 1],
                                     keep_weight=0.0, anchor="a square")()) for i in range(2)]
        pair = anchor_path(model, latents, embeddings, seeds, keep_weight=0.0, anchor="a square")
        assert float(pair()) == pytest.approx(sum(singles) / 2, rel=1e-10)


@pytest.mark.parametrize(
    "changes, kwargs, match",
    [
        ({}, {"reference_latents": None}, "reference_latents / reference_embeddings: required"),
        ({"anchor": "a square"}, {"anchor_embeddings": None}, "anchor_embeddings: required with anchor='a square'"),
        ({"null_weight": 1.0}, {"null_embedding": None}, "null_embedding: required with null_weight > 0"),
        ({}, {"seeds": "x"}, "seeds: got str"),
    ],
)
def test_anchor_path_refuses_missing_inputs_naming_them(changes, kwargs, match, tiny_images):
    model = lora_model()
    latents, embeddings, seeds = inputs(model, tiny_images)
    reference = concept_latents(model, tiny_images[2:4] * 2 - 1)
    arguments = dict(seeds=seeds, reference_latents=reference, reference_embeddings=model.encode_prompts(["a square"]),
                     null_embedding=model.encode_prompts([""]), anchor_embeddings=model.encode_prompts(["a square"]))
    arguments.update(kwargs)
    with pytest.raises(InputError, match=match):
        AnchorPathLoss(model, latents, embeddings, AnchorPathConfig(steps=2, **changes), **arguments)
    with pytest.raises(InputError, match=r"seeds: got \(1, 4, 8, 8\)"):
        anchor_path(model, latents, embeddings, seeds[:1])()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: AnchorPathConfig(steps=2, timesteps=3), r"timesteps: got 3; expected an int in \[1, steps=2\]"),
        (lambda: AnchorPathConfig(noise="random"), "noise: got 'random'"),
        (lambda: AnchorPathConfig(anchor="  "), "anchor: got '  '"),
        (lambda: AnchorPathConfig(null_weight=float("inf")), "null_weight: got inf"),
        (lambda: AnchorPathConfig(keep_weight=-1.0), "keep_weight: got -1.0"),
        (lambda: AnchorPathConfig(seed=-2), "seed: got -2"),
        (lambda: AnchorPathConfig(random_paths=1.5), "random_paths: got 1.5"),
    ],
)
def test_anchor_path_config_names_the_bad_field(make, match):
    with pytest.raises(InputError, match=match):
        make()


def test_anchor_path_config_round_trip_and_cost():
    import json

    config = AnchorPathConfig(steps=10, timesteps=3, noise="fresh", anchor="a square", null_weight=0.5)
    assert AnchorPathConfig().null_weight == 0.0  # the empty branch is opt-in (docstring: measured)
    assert memory_loss_config_from_dict(json.loads(config.to_json())) == config
    assert config.unet_evaluations(4) == 3 * 4 * 3  # anchor + concept prompt + empty prompt
    assert dataclasses.replace(config, null_weight=0.0).unet_evaluations(4) == 3 * 4 * 2


def test_anchor_path_nan_becomes_an_error_naming_the_timestep(tiny_images):
    model = lora_model()
    latents, embeddings, seeds = inputs(model, tiny_images)
    loss_fn = anchor_path(model, latents, embeddings, seeds)
    with torch.no_grad():
        next(p for n, p in model.unet.named_parameters() if ".lora_B" in n).fill_(float("nan"))
    with pytest.raises(NonFiniteError, match=r"AnchorPathLoss: NaN or Inf in the noise prediction at timestep t=\d+"):
        loss_fn()


def test_anchor_path_random_paths_draw_anew_each_call_from_their_own_seeded_stream(tiny_images):
    model = lora_model()
    latents, embeddings, seeds = inputs(model, tiny_images)
    cpu_rng = torch.get_rng_state()
    with torch.no_grad():
        first = anchor_path(model, latents, embeddings, seeds, random_paths=2, seed=5)
        again = anchor_path(model, latents, embeddings, seeds, random_paths=2, seed=5)
        values = [float(first()) for _ in range(3)]
        assert values == [float(again()) for _ in range(3)]  # the seed fixes the stream
        assert len(set(values)) == 3  # new draws each call (steps == timesteps: same timesteps)
        other = anchor_path(model, latents, embeddings, seeds, random_paths=2, seed=6)
        assert float(other()) != values[0]
        without = float(anchor_path(model, latents, embeddings, seeds, seed=5)())
        assert without != values[0]
    assert torch.equal(torch.get_rng_state(), cpu_rng)
    assert AnchorPathConfig(steps=4, timesteps=2, random_paths=3).unet_evaluations(5) == 2 * 5 * 4 * 2


def test_anchor_path_min_noise_keeps_only_the_high_noise_timesteps(tiny_images):
    model = lora_model()
    latents, embeddings, seeds = inputs(model, tiny_images)
    every = anchor_path(model, latents, embeddings, seeds, steps=4, timesteps=1, keep_weight=0.0)
    high = anchor_path(model, latents, embeddings, seeds, steps=4, timesteps=1, keep_weight=0.0, min_noise=0.5)
    floor = 0.5 * high.schedule.num_train_timesteps
    assert high.indices == [i for i, t in enumerate(high.schedule.timesteps) if t >= floor]
    assert 0 < len(high.indices) < len(every.indices) == 4
    with torch.no_grad():
        by_index = [float(every()) for _ in range(4)]  # call k takes schedule entry k
        assert [float(high()) for _ in high.indices] == pytest.approx([by_index[i] for i in high.indices], rel=1e-12)
    with pytest.raises(InputError, match="min_noise: got 0.999; no timestep"):
        anchor_path(model, latents, embeddings, seeds, steps=4, min_noise=0.999)
    with pytest.raises(InputError, match=r"min_noise: got 1.0; expected a number in \[0, 1\)"):
        AnchorPathConfig(min_noise=1.0)


def test_anchor_path_guidance_pushes_past_the_anchor_and_is_neutral_on_the_concept_itself(tiny_images):
    """Target a - g (eps*(x, c) - a): with the concept's own prompt as anchor the two agree and g
    changes nothing; with another anchor, g > 0 moves the target (checked against the formula)."""
    model = lora_model()
    latents, embeddings, seeds = inputs(model, tiny_images)
    with torch.no_grad():
        own = [float(anchor_path(model, latents, embeddings, seeds, anchor=PROMPT, keep_weight=0.0, guidance=g)())
               for g in (0.0, 2.0)]
        assert own[0] == pytest.approx(own[1], rel=1e-12)
        plain = anchor_path(model, latents, embeddings, seeds, anchor="a square", keep_weight=0.0, steps=2, timesteps=1)
        guided = anchor_path(model, latents, embeddings, seeds, anchor="a square", keep_weight=0.0, steps=2,
                             timesteps=1, guidance=2.0)
        from unlearn_guard.losses.common import predict_noise
        from unlearn_guard.models.adapters import adapters_disabled

        index = plain.indices[0]
        t, alpha = plain.schedule.timesteps[index], float(plain.schedule.alpha_prod[index])
        x = math.sqrt(alpha) * plain.latents + math.sqrt(1 - alpha) * plain._path_noise(None)
        with adapters_disabled(model.unet):
            a = predict_noise(model, x, t, plain.anchor_embeddings)
            e = predict_noise(model, x, t, plain.embeddings)
        trained = predict_noise(model, x, t, plain.embeddings)
        expected = (trained - (a - 2.0 * (e - a))).pow(2).flatten(1).sum(1).mean() / plain.entries
        assert float(guided()) == pytest.approx(float(expected), rel=1e-10)
        assert float(plain()) != pytest.approx(float(expected), rel=1e-3)
    with pytest.raises(InputError, match="guidance: got -1"):
        AnchorPathConfig(guidance=-1)
    assert AnchorPathConfig(steps=4, timesteps=1, guidance=1.0).unet_evaluations(3) == 3 * 3
