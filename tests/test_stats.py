"""Seed NLL, PSNR, NLL-set distances, d_N and the MemoryDistance metric (SPEC 4, 5).

Oracles are independent: scipy's `norm.logpdf` and `wasserstein_distance`, numpy and torchmetrics'
PSNR, and hand-written numpy for the Gaussian squared W2.
"""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
import scipy.stats
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio

from unlearn_guard.errors import InputError, InsufficientDataError, NonFiniteError
from unlearn_guard.stats import (
    MemoryDistance,
    MemoryDistanceResult,
    bootstrap_interval,
    gaussian_w2_squared,
    memory_distance,
    memory_relative_distance,
    nll_distance,
    normal_nll_set,
    psnr,
    seed_nll,
    wasserstein_1,
)

SD14_SEED_SHAPE = (4, 64, 64)  # 16,384 entries
KINDS = ["mofc", "w1"]


def _nll_sets(seed: int = 0, n_erased: int = 40, n_reference: int = 60, shift: float = 150.0):
    """E, R and N as NLL-like samples: N around the N(0, I) mean, E and R shifted away from it."""
    rng = np.random.default_rng(seed)
    normal = rng.normal(23247.9, 90.5, size=50)
    erased = rng.normal(23247.9 - shift, 120.0, size=n_erased)
    reference = rng.normal(23247.9 - 2 * shift, 150.0, size=n_reference)
    return erased, reference, normal


# --- seed_nll / normal_nll_set (SPEC 4) --------------------------------------------------------


def test_seed_nll_of_zero_seed_is_the_constant():
    nll = seed_nll(torch.zeros(1, *SD14_SEED_SHAPE))
    assert nll.dtype == torch.float64 and nll.shape == (1,)
    assert nll.item() == pytest.approx(15055.89, abs=0.01)


def test_seed_nll_of_normal_draws_matches_chi_square_moments():
    # NLL = D ln(2 pi)/2 + chi2_D / 2 with D = 16,384: mean 23,247.9, std sqrt(D / 2) = 90.5.
    generator = torch.Generator().manual_seed(1234)
    nll = torch.cat([seed_nll(torch.randn((500, *SD14_SEED_SHAPE), generator=generator)) for _ in range(4)])
    expected_mean = 16384 * (0.5 + math.log(2 * math.pi) / 2)
    assert expected_mean == pytest.approx(23247.9, abs=0.05)
    standard_error = 90.5 / math.sqrt(nll.numel())
    assert abs(nll.mean().item() - expected_mean) < 3 * standard_error
    assert nll.std().item() == pytest.approx(90.5, rel=0.05)


@pytest.mark.parametrize("shape", [(3, 1), (2, 5), (2, 4, 3, 3), (1, 4, 8, 8)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_seed_nll_matches_scipy_logpdf(shape, dtype):
    seeds = torch.randn(shape, generator=torch.Generator().manual_seed(7)).to(dtype)
    values = seeds.to(torch.float64).numpy().reshape(shape[0], -1)
    expected = -scipy.stats.norm.logpdf(values).sum(axis=1)
    np.testing.assert_allclose(seed_nll(seeds).numpy(), expected, rtol=1e-12)


def test_seed_nll_batch_equals_singles():
    seeds = torch.randn(5, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    singles = torch.cat([seed_nll(seeds[i : i + 1]) for i in range(5)])
    assert torch.equal(seed_nll(seeds), singles)


def _with_nonfinite(index: int, value: float) -> torch.Tensor:
    seeds = torch.zeros(4, 2, 3)
    seeds[index, 1, 2] = value
    return seeds


@pytest.mark.parametrize(
    "seeds, error, match",
    [
        (_with_nonfinite(2, float("nan")), NonFiniteError, r"batch indices \[2\]"),
        (_with_nonfinite(0, float("inf")), NonFiniteError, r"batch indices \[0\]"),
        (torch.tensor(1.0), InputError, r"non-empty.*got shape \(\)"),
        (torch.zeros(0, 4, 8, 8), InputError, r"non-empty.*got shape \(0, 4, 8, 8\)"),
        (torch.zeros(2, 3, dtype=torch.int64), InputError, "floating-point"),
        (np.zeros((2, 3)), InputError, "torch.Tensor"),
    ],
)
def test_seed_nll_errors(seeds, error, match):
    with pytest.raises(error, match=match):
        seed_nll(seeds)


def test_normal_nll_set_is_seeded_randn_float32():
    nll = normal_nll_set((4, 8, 8), 6, seed=11)
    expected = seed_nll(torch.randn((6, 4, 8, 8), generator=torch.Generator().manual_seed(11)))
    assert nll.dtype == torch.float64 and nll.shape == (6,)
    assert torch.equal(nll, expected)
    assert torch.equal(nll, normal_nll_set((4, 8, 8), 6, seed=11))
    assert not torch.equal(nll, normal_nll_set((4, 8, 8), 6, seed=12))


@pytest.mark.parametrize(
    "seed_shape, n, match",
    [((), 5, "seed_shape"), ((4, 0, 8), 5, "seed_shape"), ("4x8", 5, "seed_shape"), ((4, 8), 0, "n: expected")],
)
def test_normal_nll_set_errors(seed_shape, n, match):
    with pytest.raises(InputError, match=match):
        normal_nll_set(seed_shape, n, seed=0)


# --- psnr ----------------------------------------------------------------------------------------


def _image_pair(shape=(3, 3, 16, 12), seed=0):
    generator = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=generator)
    reconstruction = (target + 0.05 * torch.randn(shape, generator=generator)).clamp(0, 1)
    return reconstruction, target


def _numpy_psnr(reconstruction: torch.Tensor, target: torch.Tensor, quantize: bool) -> np.ndarray:
    a, b = reconstruction.double().numpy(), target.double().numpy()
    if quantize:
        a, b = np.rint(a * 255) / 255, np.rint(b * 255) / 255
    mse = np.mean((a - b) ** 2, axis=(1, 2, 3))
    return -10.0 * np.log10(mse)  # peak 1: 20 log10(1) - 10 log10(MSE)


@pytest.mark.parametrize("quantize", [True, False])
@pytest.mark.parametrize("shape", [(3, 3, 16, 12), (1, 3, 7, 5)])
def test_psnr_matches_numpy(quantize, shape):
    reconstruction, target = _image_pair(shape)
    result = psnr(reconstruction, target, quantize=quantize)
    assert result.dtype == torch.float64 and result.shape == (shape[0],)
    np.testing.assert_allclose(result.numpy(), _numpy_psnr(reconstruction, target, quantize), rtol=1e-12)


def test_psnr_unquantized_matches_torchmetrics():
    reconstruction, target = _image_pair()
    expected = peak_signal_noise_ratio(
        reconstruction.double(), target.double(), data_range=1.0, reduction="none", dim=(1, 2, 3)
    )
    # torchmetrics scales by 10 / log(tensor(10.0)) with a float32 log(10): 4.5e-8 relative apart.
    np.testing.assert_allclose(psnr(reconstruction, target, quantize=False).numpy(), expected.numpy(), rtol=1e-7)


def test_psnr_quantize_changes_non_8bit_images_only():
    reconstruction, target = _image_pair()
    assert not torch.allclose(psnr(reconstruction, target, True), psnr(reconstruction, target, False), rtol=1e-6)
    on_grid_r, on_grid_t = torch.round(reconstruction * 255) / 255, torch.round(target * 255) / 255
    torch.testing.assert_close(psnr(on_grid_r, on_grid_t, True), psnr(on_grid_r, on_grid_t, False))


def test_psnr_identical_images_give_inf():
    reconstruction, target = _image_pair((2, 3, 8, 8))
    reconstruction[0] = target[0]
    result = psnr(reconstruction, target)
    assert result[0].item() == math.inf and math.isfinite(result[1].item())


def test_psnr_accepts_values_within_tolerance_of_the_range():
    target = torch.full((1, 3, 4, 4), 0.5)
    reconstruction = target.clone()
    reconstruction[0, 0, 0, 0] = 1.0 + 5e-7
    reconstruction[0, 0, 0, 1] = -5e-7
    assert math.isfinite(psnr(reconstruction, target, quantize=False).item())


def _images(value: float, index: int = 1) -> torch.Tensor:
    images = torch.full((3, 3, 4, 4), 0.5)
    images[index, 2, 1, 1] = value
    return images


@pytest.mark.parametrize(
    "reconstruction, target, error, match",
    [
        (torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 9), InputError, r"\(2, 3, 8, 8\) and \(2, 3, 8, 9\)"),
        (torch.zeros(3, 8, 8), torch.zeros(3, 8, 8), InputError, r"reconstruction.*\(B, C, H, W\)"),
        (_images(1.01), _images(0.5), InputError, r"reconstruction.*\[0, 1\].*max 1\.01.*\[1\]"),
        (_images(0.5), _images(-0.01, index=2), InputError, r"target.*\[0, 1\].*min -0\.01.*\[2\]"),
        (_images(float("nan")), _images(0.5), NonFiniteError, r"reconstruction.*batch indices \[1\]"),
        (_images(0.5), _images(float("inf"), index=0), NonFiniteError, r"target.*batch indices \[0\]"),
    ],
)
def test_psnr_errors(reconstruction, target, error, match):
    with pytest.raises(error, match=match):
        psnr(reconstruction, target)


# --- Distances between NLL sets (SPEC 5) --------------------------------------------------------


def _pairs():
    rng = np.random.default_rng(2024)
    return {
        "equal sizes": (rng.normal(size=50), rng.normal(size=50)),
        "unequal sizes": (rng.normal(size=37), rng.normal(1.0, 2.0, size=81)),
        "ties": (rng.integers(0, 5, size=30).astype(float), rng.integers(2, 6, size=45).astype(float)),
        "shifted": (rng.normal(23247.9, 90.5, 50), rng.normal(23100.0, 120.0, 20)),
        "one value each": (np.array([3.0]), np.array([-1.5])),
        "identical": (np.arange(10.0), np.arange(10.0)),
    }


@pytest.mark.parametrize("case", list(_pairs()))
def test_wasserstein_1_matches_scipy(case):
    a, b = _pairs()[case]
    expected = scipy.stats.wasserstein_distance(a, b)
    assert wasserstein_1(a, b) == pytest.approx(expected, rel=1e-12, abs=0)
    assert wasserstein_1(b, a) == pytest.approx(expected, rel=1e-12, abs=0)


def test_wasserstein_1_tolerance_can_fail():
    a, b = _pairs()["unequal sizes"]
    assert wasserstein_1(a, b + 1e-6) != pytest.approx(scipy.stats.wasserstein_distance(a, b), rel=1e-12, abs=0)


def _gaussian_w2_squared_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    mean_a, mean_b = np.sum(a) / len(a), np.sum(b) / len(b)
    std_a = math.sqrt(np.sum((a - mean_a) ** 2) / len(a))  # population std, ddof=0
    std_b = math.sqrt(np.sum((b - mean_b) ** 2) / len(b))
    return (mean_a - mean_b) ** 2 + (std_a - std_b) ** 2


@pytest.mark.parametrize("case", list(_pairs()))
def test_gaussian_w2_squared_matches_closed_form(case):
    a, b = _pairs()[case]
    assert gaussian_w2_squared(a, b) == pytest.approx(_gaussian_w2_squared_by_hand(a, b), rel=1e-9, abs=1e-12)


def test_gaussian_w2_squared_uses_population_std():
    a, b = np.array([0.0, 2.0]), np.array([0.0, 0.0])
    assert gaussian_w2_squared(a, b) == pytest.approx(2.0)  # mean 1, std 1 (ddof=1 would give 1 + 2)


@pytest.mark.parametrize("convert", [list, np.asarray, torch.tensor, lambda x: torch.tensor(x, dtype=torch.float32)])
@pytest.mark.parametrize("function", [gaussian_w2_squared, wasserstein_1])
def test_distances_accept_lists_arrays_and_tensors(convert, function):
    a, b = [0.0, 1.0, 3.5, 2.0], [1.0, -2.0, 0.5]
    assert function(convert(a), convert(b)) == pytest.approx(function(np.array(a), np.array(b)), rel=1e-12)


@pytest.mark.parametrize("kind, function", [("mofc", gaussian_w2_squared), ("w1", wasserstein_1)])
def test_nll_distance_dispatches(kind, function):
    a, b = _pairs()["unequal sizes"]
    assert nll_distance(a, b, kind) == function(a, b)


@pytest.mark.parametrize(
    "a, b, kind, error, match",
    [
        ([1.0, 2.0], [1.0, 2.0], "emd", InputError, r"unknown distance kind 'emd'"),
        ([], [1.0, 2.0], "w1", InsufficientDataError, r"a: has 0 values"),
        ([1.0, float("nan")], [1.0], "mofc", NonFiniteError, r"a: NaN or Inf at indices \[1\]"),
        ([1.0], [[1.0, 2.0]], "w1", InputError, r"b: expected a 1-D sample, got shape \(1, 2\)"),
        ([1.0], ["x"], "w1", InputError, r"b: expected a 1-D sequence of numbers"),
    ],
)
def test_nll_distance_errors(a, b, kind, error, match):
    with pytest.raises(error, match=match):
        nll_distance(a, b, kind)


# --- Memory relative distance d_N (SPEC 5) ------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_memory_relative_distance_is_one_when_erased_equals_reference(kind):
    erased, _, normal = _nll_sets()
    assert memory_relative_distance(list(erased), list(erased), normal, kind) == 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_memory_relative_distance_is_the_ratio_of_distances(kind):
    erased, reference, normal = _nll_sets()
    oracle = {"mofc": _gaussian_w2_squared_by_hand, "w1": scipy.stats.wasserstein_distance}[kind]
    expected = oracle(erased, normal) / oracle(reference, normal)
    assert memory_relative_distance(erased, reference, normal, kind) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_memory_relative_distance_grows_as_erased_leaves_normal(kind):
    _, reference, normal = _nll_sets()
    base = np.random.default_rng(5).normal(0.0, 90.5, size=40)
    erased_sets = [normal.mean() - shift + base for shift in (0, 100, 300, 900)]
    values = [memory_relative_distance(erased, reference, normal, kind) for erased in erased_sets]
    assert all(smaller < larger for smaller, larger in zip(values, values[1:]))


_E, _R, _N = _nll_sets()


@pytest.mark.parametrize(
    "erased, reference, normal, kind, error, match",
    [
        (_E[:1], _R, _N, "mofc", InsufficientDataError, r"nll_erased \(set E\): has 1 values, at least 2"),
        (_E, [], _N, "mofc", InsufficientDataError, r"nll_reference \(set R\): has 0 values, at least 2"),
        (_E, _R, _N[:1], "w1", InsufficientDataError, r"nll_normal \(set N\): has 1 values"),
        (np.append(_E, np.nan), _R, _N, "mofc", NonFiniteError, r"nll_erased \(set E\): NaN or Inf at indices \[40\]"),
        (_E, np.append(np.inf, _R), _N, "w1", NonFiniteError, r"nll_reference \(set R\): NaN or Inf at indices \[0\]"),
        (_E, _R, np.append(_N, -np.inf), "mofc", NonFiniteError, r"nll_normal \(set N\)"),
        (_E.reshape(4, 10), _R, _N, "mofc", InputError, r"nll_erased \(set E\): expected a 1-D sample"),
        (_E, _N, _N, "mofc", InputError, r"d_N is undefined.*R.*N.*is 0"),
        (_E, _N, _N, "w1", InputError, r"d_N is undefined"),
        (_E, _R, _N, "emd", InputError, r"unknown distance kind 'emd'"),
    ],
)
def test_memory_relative_distance_errors(erased, reference, normal, kind, error, match):
    with pytest.raises(error, match=match):
        memory_relative_distance(erased, reference, normal, kind)


# --- Bootstrap interval ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_bootstrap_same_seed_same_interval(kind):
    sets = _nll_sets()
    first = bootstrap_interval(*sets, kind=kind, samples=300, confidence=0.9, seed=4)
    assert first == bootstrap_interval(*sets, kind=kind, samples=300, confidence=0.9, seed=4)
    assert first != bootstrap_interval(*sets, kind=kind, samples=300, confidence=0.9, seed=5)


@pytest.mark.parametrize("kind", KINDS)
def test_bootstrap_interval_contains_point_estimate(kind):
    sets = _nll_sets(n_erased=200, n_reference=200)
    low, high = bootstrap_interval(*sets, kind=kind, samples=500, confidence=0.95, seed=0)
    assert low < memory_relative_distance(*sets, kind=kind) < high


@pytest.mark.parametrize("kind", KINDS)
def test_bootstrap_matches_scipy_percentile_bootstrap(kind):
    # scipy draws different resamples, so the two intervals agree up to Monte Carlo error: with
    # 2000 resamples the ends were 0.2-4% of the interval's width apart over 6 seeded trials.
    sets = _nll_sets(seed=1)
    low, high = bootstrap_interval(*sets, kind=kind, samples=2000, confidence=0.9, seed=1)
    oracle = scipy.stats.bootstrap(
        sets, lambda e, r, n: memory_relative_distance(e, r, n, kind), n_resamples=2000, vectorized=False,
        method="percentile", confidence_level=0.9, rng=np.random.default_rng(11),
    ).confidence_interval
    width = oracle.high - oracle.low
    assert abs(low - oracle.low) < 0.1 * width and abs(high - oracle.high) < 0.1 * width


@pytest.mark.parametrize("kind", KINDS)
def test_bootstrap_skips_resamples_with_zero_denominator(kind):
    # R* and N* are both all 5.0 in about 10% of resamples: D(R*, N*) = 0 there.
    erased, reference, normal = [1.0, 2.0, 3.0], [5.0, 5.0, 5.0, 6.0], [5.0] * 5 + [7.0]
    low, high = bootstrap_interval(erased, reference, normal, kind=kind, samples=200, confidence=0.9, seed=0)
    assert math.isfinite(low) and math.isfinite(high) and low <= high


def test_bootstrap_wider_at_higher_confidence():
    sets = _nll_sets()
    low_90, high_90 = bootstrap_interval(*sets, kind="mofc", samples=400, confidence=0.9, seed=0)
    low_99, high_99 = bootstrap_interval(*sets, kind="mofc", samples=400, confidence=0.99, seed=0)
    assert low_99 <= low_90 < high_90 <= high_99


def test_bootstrap_with_zero_samples_is_nan():
    low, high = bootstrap_interval(*_nll_sets(), kind="w1", samples=0, confidence=0.95, seed=0)
    assert math.isnan(low) and math.isnan(high)


@pytest.mark.parametrize(
    "samples, confidence, seed, match",
    [(-1, 0.95, 0, "samples"), (10, 1.0, 0, "confidence"), (10, 0.0, 0, "confidence"), (10, 0.9, 1.5, "seed")],
)
def test_bootstrap_argument_errors(samples, confidence, seed, match):
    with pytest.raises(InputError, match=match):
        bootstrap_interval(*_nll_sets(), kind="mofc", samples=samples, confidence=confidence, seed=seed)


# --- memory_distance and its result ------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_memory_distance_collects_everything(kind):
    erased, reference, normal = _nll_sets()
    result = memory_distance(erased, reference, normal, kind=kind, bootstrap_samples=200, confidence=0.9, seed=3)
    assert result.value == memory_relative_distance(erased, reference, normal, kind)
    assert (result.ci_low, result.ci_high) == bootstrap_interval(
        erased, reference, normal, kind=kind, samples=200, confidence=0.9, seed=3
    )
    assert (result.n_erased, result.n_reference, result.n_normal) == (40, 60, 50)
    assert result.distance_erased_normal == nll_distance(erased, normal, kind)
    assert result.distance_reference_normal == nll_distance(reference, normal, kind)
    assert (result.kind, result.confidence, result.bootstrap_samples) == (kind, 0.9, 200)


def test_memory_distance_result_to_dict_is_json_safe():
    result = memory_distance(*_nll_sets(), bootstrap_samples=0)
    data = result.to_dict()
    assert data["ci_low"] == "nan" and data["ci_high"] == "nan"
    assert math.isnan(float(data["ci_low"]))
    assert json.loads(result.to_json()) == data
    assert data["value"] == result.value and set(data) == set(MemoryDistanceResult.__dataclass_fields__)


# --- MemoryDistance metric ------------------------------------------------------------------------


def _metric(**overrides) -> MemoryDistance:
    options = dict(seed_shape=(4, 8, 8), bootstrap_samples=100, normal_seed=2)
    options.update(overrides)
    return MemoryDistance(**options)


def _seed_batches(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    erased = 1.3 * torch.randn((12, 4, 8, 8), generator=generator)  # less likely than N(0, I) draws
    reference = 0.9 * torch.randn((10, 4, 8, 8), generator=generator)
    return erased, reference


def _twin(erased: torch.Tensor, reference: torch.Tensor, kind: str = "mofc", seed_shape=(4, 8, 8)):
    normal = normal_nll_set(seed_shape, 50, seed=2)
    return memory_distance(seed_nll(erased), seed_nll(reference), normal, kind=kind, bootstrap_samples=100, seed=2)


@pytest.mark.parametrize("kind", KINDS)
def test_metric_equals_functional_twin(kind):
    erased, reference = _seed_batches()
    metric = _metric(kind=kind)
    metric.update(seed_nll(erased), "erased")
    metric.update(seed_nll(reference), "reference")
    assert metric.compute() == _twin(erased, reference, kind)


@pytest.mark.parametrize("chunk", [1, 3, 5, 12])
def test_metric_chunked_updates_equal_one_update(chunk):
    erased, reference = _seed_batches()
    metric = _metric()
    for start in range(0, 12, chunk):
        metric.update_seeds(erased[start : start + chunk], "erased")
    metric.update_seeds(reference, "reference")
    assert metric.compute() == _twin(erased, reference)


def test_metric_learns_seed_shape_from_update_seeds():
    erased, reference = _seed_batches()
    metric = _metric(seed_shape=None)
    metric.update_seeds(erased, "erased")
    metric.update_seeds(reference, "reference")
    assert metric.seed_shape == (4, 8, 8)
    assert metric.compute() == _twin(erased, reference)
    with pytest.raises(InputError, match=r"expected shape \(B, 4, 8, 8\).*got \(2, 4, 8, 9\)"):
        metric.update_seeds(torch.zeros(2, 4, 8, 9), "erased")


def test_metric_reset_keeps_reference_unless_asked():
    erased, reference = _seed_batches()
    new_erased, _ = _seed_batches(seed=1)

    metric = _metric()
    metric.update_seeds(erased, "erased")
    metric.update_seeds(reference, "reference")
    metric.compute()
    metric.reset()
    metric.update_seeds(new_erased, "erased")
    assert metric.compute() == _twin(new_erased, reference)

    metric = _metric(seed_shape=None, reset_reference=True)
    metric.update_seeds(erased, "erased")
    metric.update_seeds(reference, "reference")
    metric.reset()
    assert metric.seed_shape is None
    metric.update_seeds(new_erased, "erased")
    with pytest.raises(InsufficientDataError, match=r"nll_reference \(set R\): has 0 values"):
        metric.compute()


def test_metric_compute_without_seed_shape_errors():
    metric = _metric(seed_shape=None)
    metric.update(torch.tensor([1.0, 2.0, 3.0]), "erased")
    metric.update(torch.tensor([1.0, 5.0]), "reference")
    with pytest.raises(InputError, match=r"seed_shape is unknown.*update_seeds"):
        metric.compute()


def test_metric_without_erased_data_errors():
    _, reference = _seed_batches()
    metric = _metric()
    metric.update_seeds(reference, "reference")
    with pytest.raises(InsufficientDataError, match=r"nll_erased \(set E\): has 0 values"):
        metric.compute()


@pytest.mark.parametrize(
    "nll, subset, error, match",
    [
        (torch.tensor([1.0, 2.0]), "normal", InputError, r"subset: expected 'erased' or 'reference', got 'normal'"),
        (torch.ones(2, 3), "erased", InputError, r"nll: expected a 1-D tensor.*\(2, 3\)"),
        ([1.0, 2.0], "erased", InputError, r"nll: expected a 1-D tensor.*list"),
        (torch.tensor([1.0, float("nan"), 3.0]), "reference", NonFiniteError, r"reference set.*\[1\]"),
    ],
)
def test_metric_update_errors(nll, subset, error, match):
    with pytest.raises(error, match=match):
        _metric().update(nll, subset)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"kind": "emd"}, "unknown distance kind"),
        ({"n_normal": 1}, "n_normal"),
        ({"confidence": 1.5}, "confidence"),
        ({"bootstrap_samples": -5}, "samples"),
        ({"normal_seed": "0"}, "normal_seed"),
        ({"seed_shape": (4, 0, 8)}, "seed_shape"),
        ({"reset_reference": "yes"}, "reset_reference"),
    ],
)
def test_metric_constructor_errors(overrides, match):
    with pytest.raises(InputError, match=match):
        _metric(**overrides)


def test_metric_forward_only_updates():
    erased, reference = _seed_batches()
    metric = _metric()
    assert metric(seed_nll(erased), "erased") is None
    metric(seed_nll(reference), "reference")
    assert metric.compute() == _twin(erased, reference)


def test_metric_states_gather_across_processes():
    # Simulate a second rank whose NLLs are this rank's plus 100: after the "cat" sync, compute
    # must see both ranks' sets, and the local states must come back afterwards.
    erased, reference = _seed_batches()

    def gather(tensor: torch.Tensor, group=None) -> list[torch.Tensor]:
        return [tensor, tensor + 100.0]

    metric = _metric(dist_sync_fn=gather, distributed_available_fn=lambda: True)
    metric.update_seeds(erased, "erased")
    metric.update_seeds(reference, "reference")
    both = lambda nll: torch.cat([nll, nll + 100.0])  # noqa: E731
    normal = normal_nll_set((4, 8, 8), 50, seed=2)
    expected = memory_distance(both(seed_nll(erased)), both(seed_nll(reference)), normal, bootstrap_samples=100, seed=2)
    assert metric.compute() == expected
    assert sum(t.numel() for t in metric.nll_erased) == 12


def test_metric_survives_pickle_and_clone():
    erased, reference = _seed_batches()
    metric = _metric()
    metric.update_seeds(erased, "erased")
    metric.update_seeds(reference, "reference")
    expected = metric.compute()
    assert pickle.loads(pickle.dumps(metric)).compute() == expected
    assert metric.clone().compute() == expected
