"""The utility check: a checkpoint that destroyed the model fails, an honest erasure passes, the
base equals itself, and the CLIP-score path is wired to torchmetrics (on a tiny random CLIP saved
to a folder: no hub). Small n and one or two short settings keep it fast; the measured runs are
benchmarks/utility_check.py's."""

from __future__ import annotations

import json

import pytest
import torch

from unlearn_guard.errors import InputError, ModelError
from unlearn_guard.sampling import DEFAULT_SETTING, STANDARD_SETTINGS, WORLD_SETTINGS, SamplingSetting
from unlearn_guard.utility import (DEFAULT_MIN_RATIO_CLIP, DEFAULT_MIN_RATIO_SHAPES, ItemScore, UtilityConfig,
                                   UtilityResult, UtilityScores, clip_score_of, compare_utility, frechet_distance,
                                   load_clip, measure_utility, utility_check)
from unlearn_guard.world import SHAPES, load_classifier, load_world_model

SHORT = (SamplingSetting("ddim", 4.0, 10), SamplingSetting("euler-a", 4.0, 10))


@pytest.fixture(scope="module")
def classifier():
    return load_classifier()


@pytest.fixture(scope="module")
def base():
    return load_world_model()


# --------------------------------------------------------------------------- the config


@pytest.mark.parametrize("fields, match", [
    (dict(), "exactly one"),
    (dict(shapes=("square",), prompts=("a cat",)), "exactly one"),
    (dict(shapes=("star",)), "shapes"),
    (dict(shapes=("square", "square")), "distinct"),
    (dict(shapes="square"), "tuple"),
    (dict(shapes=("square",), n=0), "'n'"),
    (dict(shapes=("square",), seed=-1), "seed"),
    (dict(shapes=("square",), min_ratio=1.5), "min_ratio"),
    (dict(shapes=("square",), settings="fast"), "settings"),
    (dict(prompts=("a cat",), clip_model=""), "clip_model"),
    (dict(shapes=("square",), confidence=1.0), "confidence"),
])
def test_config_rejects_bad_values(fields, match):
    with pytest.raises(InputError, match=match):
        UtilityConfig(**fields)


def test_config_defaults_by_metric_and_round_trip():
    world = UtilityConfig.for_world("circle")
    assert world.shapes == tuple(s for s in SHAPES if s != "circle") and world.metric == "shape-accuracy"
    assert world.settings == WORLD_SETTINGS and world.min_ratio == DEFAULT_MIN_RATIO_SHAPES
    real = UtilityConfig(prompts=("a photo of a dog",))
    assert real.settings == STANDARD_SETTINGS and real.min_ratio == DEFAULT_MIN_RATIO_CLIP
    assert real.metric == "clip-score" and real.items == ("a photo of a dog",)
    for config in (world, real, UtilityConfig(shapes=["ring"], settings=[DEFAULT_SETTING], min_ratio=0.3)):
        assert UtilityConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(InputError, match="erased"):
        UtilityConfig.for_world("star")


# --------------------------------------------------------------------------- the world


def test_the_base_against_itself_has_ratio_one(base, classifier):
    config = UtilityConfig(shapes=("square", "ring"), n=4, settings=SHORT)
    result = utility_check(base, base, config, classifier=classifier)
    assert [s.ratio for s in result.settings] == [1.0, 1.0] and result.ratio == 1.0 and result.passed
    assert [s.checkpoint == s.base for s in result.settings] == [True, True]
    assert "utility kept" in result.reason and "(min_ratio)" in result.reason  # the config field it reads
    assert result.to_dict()["provenance"]["versions"]["torch"] and result.to_dict()["provenance"]["seed"] == 0
    again = UtilityResult.from_dict(json.loads(json.dumps(result.to_dict())))  # what a gate reads from its cache
    assert again.to_dict() == json.loads(json.dumps(result.to_dict()))


def destroyed_world(kind: str):
    """The shipped world with every UNet parameter zeroed, or redrawn from N(0, 1) with seed 0."""
    model = load_world_model()
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.unet.parameters():
            parameter.zero_() if kind == "zeros" else torch.nn.init.normal_(parameter)
    return model


def test_a_destroyed_unet_fails_and_the_retrained_world_keeps_its_shapes(base, classifier):
    """Negative control. A zeroed UNet predicts no noise whatever the prompt, so its images ignore the
    prompt and the kept shapes' expected accuracies sum to at most 1: a mean of at most 1/5 (a ratio
    near 0.22; 8 images per shape measure 0.25 / 0.90). A UNet redrawn from N(0, 1) fails too. The
    world retrained without circles keeps the other five shapes near the base."""
    config = UtilityConfig.for_world("circle", n=8, settings=(SamplingSetting("ddim", 4.0, 15),))
    base_scores = measure_utility(base, config, classifier=classifier)
    assert base_scores.mean(0).value > 0.8  # the base draws its shapes (else the ratio would mean little)
    zeroed = utility_check(destroyed_world("zeros"), base_scores, config, classifier=classifier)
    assert zeroed.ratio < 0.35 < DEFAULT_MIN_RATIO_SHAPES
    assert not zeroed.passed and zeroed.reason.startswith("utility lost")
    assert not utility_check(destroyed_world("normal"), base_scores, config, classifier=classifier).passed
    kept = utility_check(load_world_model(without="circle"), base_scores, config, classifier=classifier)
    assert kept.ratio > 0.8 and kept.passed


def test_scores_are_paired_per_item_and_setting(base, classifier):
    """Item k's images start from seeds seed + k n ..: the base measured once serves any checkpoint,
    its JSON round trip gives the same verdict, and a measurement under another config is refused."""
    config = UtilityConfig(shapes=("triangle", "cross"), n=3, seed=5, settings=SHORT[:1])
    scores = measure_utility(base, config, classifier=classifier)
    assert [[i.item for i in row] for row in scores.scores] == [["triangle", "cross"]]
    assert all(i.n == 3 and i.successes is not None and i.ci_low <= i.value <= i.ci_high for i in scores.scores[0])
    again = UtilityScores.from_dict(json.loads(json.dumps(scores.to_dict())))
    assert compare_utility(scores, again, config).ratio == 1.0
    other = measure_utility(base, UtilityConfig(shapes=("triangle", "cross"), n=3, seed=6, settings=SHORT[:1]),
                            classifier=classifier)
    with pytest.raises(InputError, match=r"measured with another config \(differs in \['seed'\]\)"):
        compare_utility(other, scores, config)


def score(item: str, successes: int, n: int = 10) -> ItemScore:
    return ItemScore(item, successes / n, n, successes, 0.0, 1.0)


def scores_of(rows: list[list[int]], config: UtilityConfig) -> UtilityScores:
    return UtilityScores(config.metric, config.settings,
                         [[score(item, k) for item, k in zip(config.items, row)] for row in rows],
                         config.measured_with())


@pytest.mark.parametrize("checkpoint, base_rows, worst, ratio, passed", [
    ([[10, 10], [5, 5]], [[10, 10], [10, 10]], 1, 0.5, True),      # the lower setting decides; at the bar passes
    ([[4, 5], [10, 10]], [[10, 10], [10, 10]], 0, 0.45, False),
    ([[10, 10], [9, 9]], [[8, 8], [9, 9]], 1, 1.0, True),            # above the base counts as 1.25, not the worst
    ([[10, 10], [0, 0]], [[10, 10], [0, 0]], 1, None, False),       # the base draws nothing: undefined, fails
])
def test_the_worst_setting_decides(checkpoint, base_rows, worst, ratio, passed):
    config = UtilityConfig(shapes=("square", "ring"), n=10, settings=SHORT, min_ratio=0.5)
    result = compare_utility(scores_of(checkpoint, config), scores_of(base_rows, config), config)
    assert result.worst.setting == SHORT[worst] and result.passed is passed
    assert result.ratio == (None if ratio is None else pytest.approx(ratio))
    data = json.loads(result.to_json())
    assert data["passed"] is passed and data["min_ratio"] == 0.5 and data["worst"]["label"] == SHORT[worst].label
    assert [s["label"] for s in data["settings"]] == [s.label for s in SHORT]
    assert [i["item"] for i in data["settings"][0]["items"]] == ["square", "ring"]
    assert result.summary_table().splitlines()[-1] == result.reason
    if ratio is None:
        assert result.reason.startswith("utility undefined")


def test_pooled_mean_has_a_wilson_interval(base, classifier):
    config = UtilityConfig(shapes=("square", "ring"), n=10, settings=SHORT[:1])
    mean = scores_of([[7, 3]], config).mean(0)
    assert (mean.successes, mean.n, mean.value) == (10, 20, 0.5) and 0.29 < mean.ci_low < 0.5 < mean.ci_high < 0.71


# --------------------------------------------------------------------------- CLIP score and FID


@pytest.fixture(scope="module")
def tiny_clip_folder(tmp_path_factory):
    from unlearn_guard.models.tiny import build_tiny_clip

    folder = tmp_path_factory.mktemp("tiny_clip")
    model, processor = build_tiny_clip(seed=0)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_clip_score_is_torchmetrics_on_the_loaded_clip(tiny_clip_folder):
    """Against an independent computation: 100 * cos of CLIP's projected features, averaged."""
    from transformers import CLIPModel, CLIPProcessor

    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    got = clip_score_of(images, "a square", load_clip(str(tiny_clip_folder)))
    model, processor = CLIPModel.from_pretrained(tiny_clip_folder), CLIPProcessor.from_pretrained(tiny_clip_folder)
    pixels = (images * 255).round().to(torch.uint8)
    inputs = processor(text=["a square"] * 3, images=list(pixels), return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**inputs)
    cosine = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds, dim=-1)
    assert got == pytest.approx(float(100 * cosine.mean()), rel=1e-5) and got > 0
    assert clip_score_of(images.flip(-1), "a square", load_clip(str(tiny_clip_folder))) != pytest.approx(got, rel=1e-6)


def test_clip_utility_wiring(base, tiny_clip_folder):
    """checkpoint == base gives ratio 1 exactly; a checkpoint that draws other images scores differently."""
    config = UtilityConfig(prompts=("a square", "a red ring"), n=2, settings=(SamplingSetting("pndm", 4.0, 5),),
                           clip_model=str(tiny_clip_folder))
    clip = load_clip(config.clip_model)
    base_scores = measure_utility(base, config, clip=clip)
    assert all(0 < i.value <= 100 and i.successes is None for i in base_scores.scores[0])
    same = utility_check(base, base_scores, config, clip=clip)
    assert same.ratio == 1.0 and same.passed
    zeroed = load_world_model()
    with torch.no_grad():
        for parameter in zeroed.unet.parameters():
            parameter.zero_()
    other = utility_check(zeroed, base_scores, config, clip=clip)
    assert other.ratio != pytest.approx(1.0, abs=1e-4)
    assert "CLIP score ratio" in other.reason and other.to_dict()["metric"] == "clip-score"


def test_a_clip_model_that_cannot_load_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="cannot load a CLIPModel and CLIPProcessor"):
        load_clip(str(tmp_path / "no-such-clip"))


def test_fid_says_what_it_needs_when_it_is_missing():
    pytest.importorskip("torch", reason="always present")
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        with pytest.raises(ModelError, match="torch-fidelity.*Inception-v3 weights"):
            frechet_distance(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    else:
        pytest.skip("torch-fidelity is installed; the FID path needs its weights from the network")


def test_the_utility_check_leaves_the_model_as_found(base, classifier):
    before = {k: v.clone() for k, v in base.unet.state_dict().items()}
    base.unet.train()
    measure_utility(base, UtilityConfig(shapes=("ring",), n=1, settings=(SamplingSetting("euler-a", 2.0, 2),)),
                    classifier=classifier)
    assert base.unet.training and all(torch.equal(before[k], v) for k, v in base.unet.state_dict().items())
    base.unet.eval()
