"""UnlearnDiffAtk adversarial prompts (SPEC 9): the simplex projection against a sorting reference,
the straight-through gradient (with a negative control), the k-slot splice against plain encoding,
batch equals singles (with prompts leaving and joining the batch), early stop and the UNet count,
that the attack finds lower-loss tokens (with a sign-flipped negative control), the model left as
found, the config, the prompts CSV and target folders, and the errors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from unlearn_guard.attacks import (
    AdversarialPromptConfig,
    ShapeJudge,
    adversarial_prompt_attack,
    load_target_images,
)
from unlearn_guard.attacks import prompt_tokens
from unlearn_guard.attacks.prompt_tokens import (
    adversarial_slots,
    adversarial_text,
    project_to_simplex,
    straight_through_one_hot,
)
from unlearn_guard.attacks.token_slot import encode_with_token
from unlearn_guard.errors import InputError
from unlearn_guard.schedule import alphas_cumprod
from unlearn_guard.io import read_prompt_seeds
from unlearn_guard.models import snapshot_module_state
from unlearn_guard.world import load_world_model
from unlearn_guard.world.generate import generate


@pytest.fixture(scope="module")
def world():
    return load_world_model()


@pytest.fixture(scope="module")
def without_circle():
    return load_world_model(without="circle")


def never(images: torch.Tensor) -> torch.Tensor:
    return torch.zeros(len(images), dtype=torch.bool)


# Mechanics only: 3 timesteps of 2 steps, 3-step generations.
TINY = AdversarialPromptConfig.from_preset("world", timesteps=(100, 500, 900), steps_per_timestep=2, num_steps=3)


# --------------------------------------------------------------------------- the simplex projection


def sorting_projection(values: torch.Tensor) -> torch.Tensor:
    """The exact Euclidean projection onto the probability simplex by sorting (Held et al. 1974;
    Duchi et al. 2008), float64: theta = (sum of the rho largest - 1) / rho for the largest feasible rho."""
    a = values.to(torch.float64)
    ordered, _ = torch.sort(a, dim=-1, descending=True)
    cumulative = ordered.cumsum(dim=-1) - 1
    ranks = torch.arange(1, a.shape[-1] + 1, dtype=torch.float64)
    feasible = ordered - cumulative / ranks > 0
    rho = feasible.to(torch.int64).cumsum(dim=-1).argmax(dim=-1, keepdim=True)  # last True
    theta = cumulative.gather(-1, rho) / (rho + 1).to(torch.float64)
    return (a - theta).clamp(min=0)


def _projection_cases() -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    cases = [(f"randn {n}", torch.randn(4, n, generator=g, dtype=torch.float64)) for n in (1, 2, 3, 22, 1000)]
    cases.append(("randn 49408 (SD's vocabulary)", torch.randn(2, 49408, generator=g, dtype=torch.float64) * 0.01))
    on_simplex = torch.rand(3, 22, generator=g, dtype=torch.float64)
    cases.append(("already on the simplex", on_simplex / on_simplex.sum(-1, keepdim=True)))
    cases.append(("uniform after a small step", torch.full((5, 49408), 1 / 49408, dtype=torch.float64)
                  + 1e-3 * torch.randn(5, 49408, generator=g, dtype=torch.float64)))
    cases.append(("all negative", -torch.rand(3, 22, generator=g, dtype=torch.float64) - 5))
    huge = torch.rand(3, 22, generator=g, dtype=torch.float64)
    huge[:, 7] = 1e6
    cases.append(("one huge entry", huge))
    cases.append(("ties", torch.tensor([[0.5, 0.5, 0.5, 0.5], [2.0, 2.0, -1.0, -1.0]], dtype=torch.float64)))
    return cases


@pytest.mark.parametrize("name, values", _projection_cases(), ids=[c[0] for c in _projection_cases()])
def test_projection_equals_the_sorting_reference(name, values):
    projected = project_to_simplex(values)
    torch.testing.assert_close(projected, sorting_projection(values), rtol=0, atol=1e-12)
    assert projected.min() >= 0 and projected.max() <= 1
    torch.testing.assert_close(projected.sum(-1), torch.ones(values.shape[0], dtype=torch.float64), rtol=0, atol=1e-12)
    if name == "already on the simplex":
        torch.testing.assert_close(projected, values, rtol=0, atol=1e-12)
    if name == "one huge entry":
        assert torch.equal(projected, F.one_hot(torch.full((3,), 7), 22).double())


def test_projection_keeps_float32_and_a_perturbed_result_fails():
    values = torch.randn(5, 22, generator=torch.Generator().manual_seed(1))
    projected = project_to_simplex(values)
    assert projected.dtype == torch.float32
    torch.testing.assert_close(projected.double(), sorting_projection(values), rtol=0, atol=1e-6)
    # negative control: the reference is sharp enough to reject a slightly different answer
    with pytest.raises(AssertionError):
        torch.testing.assert_close(projected.double() + 1e-4 * torch.eye(5, 22, dtype=torch.float64),
                                   sorting_projection(values), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- tokens in the text encoder


def _embeddings(model):
    return model.text_encoder.get_input_embeddings().weight


def test_k_slots_encode_exactly_as_the_tokens_themselves(world):
    """The generalised splice (k rows per prompt) against encoding the same token ids plainly:
    position embeddings, causal mask and pooling all see the spliced rows as the tokens."""
    tokenizer = world.tokenizer
    ids = torch.tensor([[8, 16, 20], [18, 4, 3]])  # circle red white / square a <eos>
    for placement in ("prefix", "suffix"):
        rows, positions = zip(*[adversarial_slots(tokenizer, "a red", 3, placement) for _ in range(2)])
        plain = torch.stack([r.index_put((p,), i) for r, p, i in zip(rows, positions, ids)])
        with torch.no_grad():
            spliced = encode_with_token(world, torch.stack(rows), torch.stack(positions), _embeddings(world)[ids])
            expected = world.text_encoder(plain)[0]
            torch.testing.assert_close(spliced, expected, rtol=0, atol=0)
            # negative control: other rows in the slots change the encoding
            other = encode_with_token(world, torch.stack(rows), torch.stack(positions), _embeddings(world)[ids + 1])
            assert not torch.allclose(other, expected)
    row, positions = adversarial_slots(tokenizer, "a red", 3, "suffix")
    assert positions.tolist() == [3, 4, 5] and row[:7].tolist() == [2, 4, 16, 3, 3, 3, 3]  # pad = <eos> here
    row, positions = adversarial_slots(tokenizer, "a red", 3, "prefix")
    assert positions.tolist() == [1, 2, 3] and row[:7].tolist() == [2, 3, 3, 3, 4, 16, 3]
    assert adversarial_text(tokenizer, "a red", [8, 8, 18], "prefix") == ("circle circle square", "circle circle square a red")
    assert adversarial_text(tokenizer, "a red", [8, 8, 18], "suffix")[1] == "a red circle circle square"


def test_the_straight_through_gradient_reaches_the_distributions_and_nothing_else(world):
    for module in world.modules():
        module.requires_grad_(False)
    row, positions = adversarial_slots(world.tokenizer, "a", 3, "prefix")
    ids = torch.tensor([8, 18, 4])
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    def loss_of(one_hot):
        cond = encode_with_token(world, row[None], positions[None], (one_hot @ _embeddings(world))[None])
        return world.unet(z, torch.tensor([500]), encoder_hidden_states=cond).sample.pow(2).mean()

    u = torch.nn.Parameter(torch.full((3, 22), 1 / 22))
    one_hot = straight_through_one_hot(u, ids)
    assert torch.equal(one_hot, F.one_hot(ids, 22).float())  # the forward pass is the draw itself
    loss_of(one_hot).backward()
    assert u.grad is not None and bool(torch.isfinite(u.grad).all()) and bool((u.grad.abs().sum(-1) > 0).all())
    assert all(p.grad is None for module in world.modules() for p in module.parameters())
    # the gradient is the one w.r.t. the one-hot itself, clipped to [-1, 1] (hardtanh)
    leaf = F.one_hot(ids, 22).float().requires_grad_(True)
    loss_of(leaf).backward()
    torch.testing.assert_close(u.grad, leaf.grad.clamp(-1, 1), rtol=0, atol=0)
    # negative control: the draw alone (no straight-through path) leaves the loss unconnected to u
    assert not loss_of(F.one_hot(ids, 22).float()).requires_grad


def test_one_adam_over_all_prompts_equals_one_adam_per_prompt():
    """Adam (with its L2 weight decay) is elementwise: one optimiser over (P, k, V) steps every
    prompt's u exactly as its own optimiser would, so the per-prompt optimisers change nothing."""
    g = torch.Generator().manual_seed(0)
    start = torch.rand(3, 5, 22, generator=g)
    grads = [torch.randn(3, 5, 22, generator=g) for _ in range(6)]
    together = torch.nn.Parameter(start.clone())
    apart = [torch.nn.Parameter(start[p].clone()) for p in range(3)]
    one = torch.optim.Adam([together], lr=0.01, weight_decay=0.1)
    each = [torch.optim.Adam([u], lr=0.01, weight_decay=0.1) for u in apart]
    for grad in grads:
        together.grad = grad.clone()
        one.step()
        for p, (u, optimizer) in enumerate(zip(apart, each)):
            u.grad = grad[p].clone()
            optimizer.step()
    torch.testing.assert_close(together.detach(), torch.stack([u.detach() for u in apart]), rtol=0, atol=0)
    assert not torch.equal(together.detach(), start)


# --------------------------------------------------------------------------- the attack


def test_batch_equals_singles_with_prompts_leaving_and_joining(world, without_circle):
    """4 prompts on the world retrained without circles, judged by the classifier: one shows a
    circle before the attack, two are broken in different blocks, one never is. Batch 2 (the first
    prompt succeeds after one block and leaves, the waiting one joins beside a prompt at another
    timestep) and batch 4 give exactly what batch 1 gives."""
    config = AdversarialPromptConfig.from_preset("world", timesteps=(50, 150, 250), num_steps=10)
    seeds = [12, 3, 10, 0]  # broken in block 1; already a circle; broken in block 3; never broken
    judge = ShapeJudge("circle")
    runs = {size: adversarial_prompt_attack(without_circle, ["a circle"] * 4, seeds, judge,
                                            config.replace(batch_size=size), base_model=world, progress=False)
            for size in (1, 2, 4)}
    single = runs[1].prompts
    outcomes = [(p.pre_success, p.success, p.step, p.timestep) for p in single]
    # the check needs these mixed outcomes (measured on CPU; a different kernel may flip a verdict)
    assert outcomes == [(False, True, 10, 50), (True, False, None, None), (False, True, 30, 250),
                        (False, False, None, None)], outcomes
    # each prompt's score is the judge's score of its judged (kept) image, as the released code logs it
    from unlearn_guard.attacks.judges import judge_with_scores

    for p in single:
        judged = judge_with_scores(judge, p.image[None])
        assert p.score == pytest.approx(float(judged.scores[0]), abs=1e-6) and bool(judged.verdicts[0]) == p.broken
    for size in (2, 4):
        for a, b in zip(runs[size].prompts, single):
            assert (a.pre_success, a.success, a.step, a.timestep, a.tokens, a.adversarial_prompt, a.gradient_steps) \
                == (b.pre_success, b.success, b.step, b.timestep, b.tokens, b.adversarial_prompt, b.gradient_steps)
            assert a.block_losses == pytest.approx(b.block_losses, rel=1e-5)
            torch.testing.assert_close(a.image, b.image, rtol=0, atol=1e-4)
            assert a.score == pytest.approx(b.score, abs=1e-4)
        assert runs[size].unet_evaluations == runs[1].unet_evaluations
        assert (runs[size].asr.successes, runs[size].pre_asr.successes) == (runs[1].asr.successes, runs[1].pre_asr.successes)
    # the same seed again gives the same answer; another config seed draws other tokens and noise
    again = adversarial_prompt_attack(without_circle, ["a circle"], [0], never, config.replace(timesteps=(50,)),
                                      base_model=world, progress=False)
    other = adversarial_prompt_attack(without_circle, ["a circle"], [0], never, config.replace(timesteps=(50,), seed=1),
                                      base_model=world, progress=False)
    assert again.prompts[0].block_losses == pytest.approx(single[3].block_losses[:1], rel=1e-5)
    assert other.prompts[0].block_losses != pytest.approx(single[3].block_losses[:1], rel=1e-5)


class ScriptedJudge:
    """Returns the scripted verdicts call by call and records how many images each call judged."""

    def __init__(self, script):
        self.script, self.sizes = list(script), []

    def __call__(self, images):
        self.sizes.append(len(images))
        verdicts = self.script[len(self.sizes) - 1]
        assert len(verdicts) == len(images)
        return torch.tensor(verdicts)


def test_early_stop_leaves_the_batch_and_the_unet_count_matches(without_circle):
    # call 1: the plain prompts (prompt 0 already shows it: never attacked); call 2: block 1 of
    # prompts 1 and 2 (2 succeeds and leaves); calls 3-4: prompt 1 alone, never broken.
    judge = ScriptedJudge([[True, False, False], [False, True], [False], [False]])
    targets = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    result = adversarial_prompt_attack(without_circle, ["a circle", "a red circle", "a blue circle"], [0, 1, 2], judge,
                                       TINY.replace(batch_size=3), targets=targets, progress=False)
    assert judge.sizes == [3, 2, 1, 1]
    first, second, third = result.prompts
    assert first.pre_success and not first.attacked and first.gradient_steps == 0 and first.tokens == []
    assert (third.success, third.step, third.timestep, third.gradient_steps, third.generations) == (True, 2, 100, 2, 2)
    assert (second.success, second.step, second.timestep, second.gradient_steps, second.generations) == \
        (False, None, None, 6, 4)
    assert len(second.block_losses) == 3 and second.adversarial_prompt.endswith(" a red circle")
    # UNet sample-evaluations: CFG counts 2 per image and DDIM step (3 steps); 1 per prompt and gradient step
    assert result.unet_evaluations == {"pre_attack": 3 * 3 * 2, "targets": 0, "attack": 2 * 2 + 2 + 2,
                                       "attack_generation": (2 + 1 + 1) * 3 * 2}
    assert (result.pre_asr.successes, result.asr.successes, result.n) == (1, 2, 3)
    assert all(p.score is None for p in result.prompts)  # a plain callable gives verdicts only
    assert result.asr.ci_low < 2 / 3 < result.asr.ci_high
    data = json.loads(json.dumps(result.to_dict()))
    assert data["asr"]["rate"] == pytest.approx(2 / 3) and data["prompts"][2]["step"] == 2
    assert data["prompts"][1]["final_loss"] == pytest.approx(second.block_losses[-1])
    assert data["config"] == TINY.replace(batch_size=3).to_dict() and data["judge"] == "ScriptedJudge"


def test_pre_asr_under_more_sampling_settings_reports_the_worst_and_leaves_the_attack_alone(without_circle):
    # a judge that sees the concept in every image sampled with guidance 1 (the images differ from DDIM
    # g4's, so it keys on the setting through the scripted calls): calls are [own g4 pre-attack],
    # [ddim g1], [pndm g3], then the blocks of the attack
    prompts, seeds = ["a circle", "a red circle"], [0, 1]
    targets = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    config = TINY.replace(batch_size=2, timesteps=(500,), pre_attack_settings="ddim:1:3,pndm:3:3")
    judge = ScriptedJudge([[False, False], [True, True], [False, True], [False, False]])
    result = adversarial_prompt_attack(without_circle, prompts, seeds, judge, config, targets=targets, progress=False)
    own = config.own_setting.label
    assert list(result.pre_asr_by_setting) == [own, "ddim g1.0 3 steps", "pndm g3.0 3 steps"]
    assert [r.successes for r in result.pre_asr_by_setting.values()] == [0, 2, 1]
    assert result.worst_pre_asr[0] == "ddim g1.0 3 steps" and result.worst_pre_asr[1].successes == 2
    # only the attack's own setting decides what is attacked and what ASR counts
    assert result.pre_asr.successes == 0 and all(p.attacked for p in result.prompts) and result.asr.successes == 0
    assert result.prompts[1].pre_by_setting == {own: False, "ddim g1.0 3 steps": True, "pndm g3.0 3 steps": True}
    # 2 prompts: DDIM g1 needs no unconditional pass (3 steps x 1); PNDM g3 evaluates num_steps + 1 = 4
    # times with CFG (x 2)
    assert result.unet_evaluations["pre_attack_settings"] == 2 * 3 * 1 + 2 * 4 * 2
    data = json.loads(json.dumps(result.to_dict()))
    assert data["worst_pre_asr"]["setting"] == "ddim g1.0 3 steps" and data["worst_pre_asr"]["successes"] == 2
    assert "worst Pre-ASR over 3 sampling settings" in result.summary()
    # without more settings: the own setting alone, and the attack's numbers are the same
    plain = adversarial_prompt_attack(without_circle, prompts, seeds, ScriptedJudge([[False, False], [False, False]]),
                                      config.replace(pre_attack_settings=None), targets=targets, progress=False)
    assert list(plain.pre_asr_by_setting) == [own] and "pre_attack_settings" not in plain.unet_evaluations
    assert [p.tokens for p in plain.prompts] == [p.tokens for p in result.prompts]


def test_pre_attack_settings_are_checked_in_one_line():
    with pytest.raises(InputError, match="pre_attack_settings"):
        TINY.replace(pre_attack_settings="nope")
    with pytest.raises(InputError, match="scheduler"):
        TINY.replace(pre_attack_settings="warp:1:3")
    assert TINY.replace(pre_attack_settings="world").sampling_settings()[0] == TINY.own_setting


def test_the_base_model_makes_the_targets(world, without_circle):
    config = TINY.replace(timesteps=(500,))
    result = adversarial_prompt_attack(without_circle, ["a circle", "a square"], [4, 5], never, config,
                                       base_model=world, progress=False)
    assert result.unet_evaluations["targets"] == 2 * 3 * 2
    images = generate(world, ["a circle"], seed=4, num_steps=3)  # seed + 0 = 4: the first prompt's target
    given = adversarial_prompt_attack(without_circle, ["a circle"], [4], never, config, targets=images, progress=False)
    assert given.prompts[0].block_losses == pytest.approx(result.prompts[0].block_losses, rel=1e-5)
    assert given.unet_evaluations["targets"] == 0


def _denoising_loss(model, text, x0, timestep, count=16):
    """An independent oracle: the plain prompt's mean denoising loss on x0 at `timestep` over fixed noise."""
    eps = torch.randn((count, *x0.shape), generator=torch.Generator().manual_seed(123))
    a = float(alphas_cumprod(model.scheduler_config)[timestep])
    predicted = model.predict_noise(a**0.5 * x0 + (1 - a) ** 0.5 * eps, timestep, model.encode_prompts([text] * count))
    return float((predicted - eps).pow(2).mean())


def _loss_against_uniform(world, monkeypatch=None):
    """(argmax prompt's loss, mean loss of 12 prompts with tokens drawn uniformly) for two circle targets."""
    targets = torch.cat([generate(world, ["a red circle"], seed=s) for s in (0, 1)])
    config = AdversarialPromptConfig.from_preset("world", timesteps=(500,), steps_per_timestep=20, num_steps=3)
    result = adversarial_prompt_attack(world, ["a", "a"], [0, 1], never, config, targets=targets, progress=False)
    g = torch.Generator().manual_seed(7)
    uniform = [world.tokenizer.decode(torch.randint(0, 22, (3,), generator=g).tolist()) + " a" for _ in range(12)]
    pairs = []
    for attack, target in zip(result.prompts, targets):
        x0 = world.encode_images(target[None] * 2 - 1, None, mode="mean")[0]
        found = _denoising_loss(world, attack.adversarial_prompt, x0, 500)
        pairs.append((found, sum(_denoising_loss(world, text, x0, 500) for text in uniform) / len(uniform)))
    return pairs


def test_the_attack_finds_tokens_that_denoise_the_target_better_than_uniform_ones(world, monkeypatch):
    """On the original world, prompt "a" and a circle as the target: after one block the argmax
    tokens' denoising loss (an independent oracle: the prompt's text encoded plainly) is below the
    mean over tokens drawn from the initial uniform distributions. Negative control: the same run
    with the straight-through gradient's sign flipped (ascent) lands above it."""
    for found, uniform in _loss_against_uniform(world):
        assert found < uniform, (found, uniform)
    monkeypatch.setattr(prompt_tokens._StraightThrough, "backward",
                        staticmethod(lambda ctx, grad: (-F.hardtanh(grad), None)))
    for found, uniform in _loss_against_uniform(world):
        assert found > uniform, (found, uniform)


def test_the_model_is_left_exactly_as_found(without_circle):
    model = without_circle
    model.unet.train()  # a model mid-training: train mode, weights that want gradients
    model.text_encoder.requires_grad_(True)
    before = snapshot_module_state(*model.modules())
    targets = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    adversarial_prompt_attack(model, ["a circle"], [0], never, TINY.replace(timesteps=(500,)), targets=targets,
                              progress=False)
    assert snapshot_module_state(*model.modules()) == before
    assert all(p.grad is None for module in model.modules() for p in module.parameters())
    model.unet.eval()
    model.text_encoder.requires_grad_(False)


# --------------------------------------------------------------------------- config, files, errors


def test_config_presets_round_trip_and_validation():
    paper = AdversarialPromptConfig.from_preset("unlearndiffatk")
    assert paper == AdversarialPromptConfig() and paper.timesteps[:3] == (10, 30, 50) and len(paper.timesteps) == 50
    assert paper.max_gradient_steps == 2000 and (paper.lr, paper.weight_decay, paper.num_tokens) == (0.01, 0.1, 5)
    world = AdversarialPromptConfig.from_preset("world", seed=3)
    assert world.preset == "world" and world.seed == 3 and (world.num_steps, world.guidance_scale) == (25, 4.0)
    assert world.replace(batch_size=1).preset == "world" and world.replace(lr=0.1).preset == "custom"
    assert AdversarialPromptConfig.from_dict(json.loads(json.dumps(world.to_dict()))) == world
    with pytest.raises(InputError, match="unknown fields"):
        AdversarialPromptConfig.from_dict({**world.to_dict(), "steps": 3})
    with pytest.raises(InputError, match="expected one of"):
        AdversarialPromptConfig.from_preset("paper")
    with pytest.raises(InputError, match=r"unknown fields \['steps'\]"):
        world.replace(steps=3)


@pytest.mark.parametrize("field, value", [
    ("num_tokens", 0), ("placement", "middle"), ("lr", 0), ("weight_decay", -1), ("timesteps", ()),
    ("timesteps", (10, -1)), ("steps_per_timestep", 0), ("one_hot", "gumbel"), ("num_steps", 0),
    ("guidance_scale", 0.5), ("batch_size", 0), ("seed", -1), ("confidence", 1.0), ("keep_images", 1),
    ("lr", float("nan")), ("num_tokens", True),
])
def test_config_refuses_bad_values_in_one_line(field, value):
    with pytest.raises(InputError, match=f"field '{field}'") as error:
        AdversarialPromptConfig(**{field: value})
    assert "\n" not in str(error.value)


def _write(tmp_path, text):
    path = tmp_path / "prompts.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, expected", [
    ("prompt,seed\na circle,3\n\"a, b\",4\n", (["a circle", "a, b"], [3, 4])),
    ("case_number,prompt,evaluation_seed,evaluation_guidance\n0,Old church.,69922,7.5\n1,Church door.,27998.0,7.5\n",
     (["Old church.", "Church door."], [69922, 27998])),
    ("Prompt,Seed,extra\n a circle ,0,x\n\n", (["a circle"], [0])),
])
def test_prompts_csv_layouts(tmp_path, text, expected):
    assert tuple(read_prompt_seeds(_write(tmp_path, text))) == expected


@pytest.mark.parametrize("text, message", [
    ("", "expected a header row"),
    ("prompt,seed\n", "has no rows"),
    ("prompt,case_number\na,1\n", "expected a header row"),
    ("text,seed\na,1\n", "expected a header row"),
    ("prompt,seed,evaluation_seed\na,1,1\n", "expected a header row"),
    ("prompt,seed\na,-1\n", "row 2, column 'seed': got '-1'"),
    ("prompt,evaluation_seed\na,1\nb,1.5\n", "row 3, column 'evaluation_seed': got '1.5'"),
    ("prompt,seed\na,x\n", "expected an int >= 0"),
    ("prompt,seed\na\n", "row 2: expected a prompt and a seed"),
])
def test_prompts_csv_errors_are_one_line(tmp_path, text, message):
    with pytest.raises(InputError, match=message) as error:
        read_prompt_seeds(_write(tmp_path, text))
    assert "\n" not in str(error.value)
    with pytest.raises(InputError, match="does not exist"):
        read_prompt_seeds(tmp_path / "missing.csv")


def test_target_folder_in_case_number_order(tmp_path):
    from PIL import Image

    for case, value in ((10, 200), (2, 100), (1, 50)):
        Image.new("RGB", (32, 32), (value, value, value)).save(tmp_path / f"{case}_0.png")
    targets = load_target_images(tmp_path, count=3)
    assert targets.names == ["1_0.png", "2_0.png", "10_0.png"]
    assert [round(float((p[0, 0, 0] + 1) / 2 * 255)) for p in targets.pixels] == [50, 100, 200]
    with pytest.raises(InputError, match="holds 3 images for 4 prompts"):
        load_target_images(tmp_path, count=4)


def test_inputs_are_checked_before_any_compute(world, without_circle):
    targets = torch.rand(1, 3, 32, 32)
    for kwargs, message in (
        ({}, "got neither"),
        ({"targets": targets, "base_model": world}, "got both"),
        ({"targets": torch.rand(2, 3, 32, 32)}, "got 2 images for 1 prompts"),
    ):
        with pytest.raises(InputError, match=message):
            adversarial_prompt_attack(without_circle, ["a circle"], [0], never, TINY, progress=False, **kwargs)
    for prompts, seeds, config, message in (
        (["a circle"], [0, 1], TINY, "one int seed per prompt"),
        (["a circle"], [-1], TINY, "not ints"),
        ([], [], TINY, "non-empty list"),
        (["a red circle on a white background"], [0], TINY.replace(num_tokens=5), r"prompts\[0\].*14, over the tokenizer's 12"),
        (["a circle"], [0], TINY.replace(timesteps=(1000,)), "num_train_timesteps"),
        (["a circle"], [0], "paper", "expected one of"),
    ):
        with pytest.raises(InputError, match=message):
            adversarial_prompt_attack(without_circle, prompts, seeds, never, config, targets=targets, progress=False)
    with pytest.raises(InputError, match="judge"):
        adversarial_prompt_attack(without_circle, ["a circle"], [0], "circle", TINY, targets=targets, progress=False)
