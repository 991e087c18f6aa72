"""The memory score (unlearn_guard.signal): per-image formula, divergence, interval, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unlearn_guard.errors import InputError, InsufficientDataError
from unlearn_guard.signal import image_memory, memory_score

NORMAL = np.random.default_rng(0).normal(360.0, 8.0, 50)  # an N set around 360
REF_NLL, REF_PSNR = [330.0, 331.0, 329.0, 330.0], [31.0, 30.0, 32.0, 31.0]  # known content: 330, 31 dB


def test_each_image_is_its_likelihood_position_when_it_reconstructs():
    mu_r, mu_n, cut = 330.0, 360.0, 26.0
    nll = np.array([330.0, 345.0, 360.0, 320.0, 370.0, 345.0, math.nan])
    psnr = np.array([31.0, 31.0, 31.0, 31.0, 31.0, 20.0, math.nan])
    memory = image_memory(nll, psnr, mu_r, mu_n, cut, nll_normal_std=8.0)
    # as likely as known content -> 1; halfway -> 0.5; like a random draw -> 0; clipped on both sides;
    # a seed that does not regenerate the image -> 0; a diverged image -> 0.
    np.testing.assert_allclose(memory, [1.0, 0.5, 0.0, 1.0, 0.0, 0.0, 0.0])


def test_a_seed_outside_the_typical_set_is_no_memory():
    # N's NLLs: mean 360, sd 8; k = 6 puts the band at [312, 408]. A seed at 311 is likelier than any
    # N(0, I) draw ever is: atypically small, as an eps = 0 UNet's shrunken latents are. It regenerates
    # the image and its position is clipped to 1, yet it holds no memory; one at 313 still does.
    nll = np.array([313.0, 311.0, 250.0])
    memory = image_memory(nll, np.array([31.0] * 3), 330.0, 360.0, 26.0, nll_normal_std=8.0, typical_sigmas=6.0)
    np.testing.assert_allclose(memory, [1.0, 0.0, 0.0])
    # the band is the config's: a wider one counts the seed at 311
    wider = image_memory(nll, np.array([31.0] * 3), 330.0, 360.0, 26.0, nll_normal_std=8.0, typical_sigmas=7.0)
    np.testing.assert_allclose(wider, [1.0, 1.0, 0.0])


def test_a_model_whose_reference_seeds_are_atypical_has_no_score():
    # Every seed shrunk toward zero (NLL far below N's), E and R alike, all reconstructing: the old
    # position read M = 1 ("remembers"); now the score is undefined and says why.
    collapsed = [236.0, 236.5, 235.8, 236.2]
    with pytest.raises(InsufficientDataError, match=r"undefined: only 0 of 4 reference seeds are typical.*eps = 0"):
        memory_score([236.1, 236.3], [32.0, 33.0], collapsed, [32.0] * 4, NORMAL, bootstrap_samples=0)
    # half typical is enough; the anchors then use the typical ones only
    half = memory_score([330.0, 331.0], [31.0, 31.0], [330.0, 331.0, 236.0, 236.5], [31.0] * 4, NORMAL,
                        bootstrap_samples=0)
    assert half.reference_typical == 2 and half.reference_found == 4
    assert half.nll_reference_mean == pytest.approx(330.5) and half.value > 0.9
    with pytest.raises(InsufficientDataError, match="only 1 of 3"):
        memory_score([330.0], [31.0], [330.0, 236.0, 236.5], [31.0] * 3, NORMAL, bootstrap_samples=0)


def test_atypical_concept_seeds_are_counted():
    result = memory_score([330.0, 250.0, 240.0], [31.0] * 3, REF_NLL, REF_PSNR, NORMAL, bootstrap_samples=0)
    assert result.n_atypical == 2 and result.value == pytest.approx(1 / 3)
    assert result.to_dict()["typical_sigmas"] == 6.0 and result.nll_normal_std == pytest.approx(np.std(NORMAL, ddof=1))


def test_remembering_and_never_knowing_land_at_the_two_ends():
    knows = memory_score([328.0, 331.0, 330.0], [31.0, 30.5, 31.5], REF_NLL, REF_PSNR, NORMAL, bootstrap_samples=200)
    never = memory_score([350.0, 357.0, 362.0], [28.0, 29.0, 27.5], REF_NLL, REF_PSNR, NORMAL, bootstrap_samples=200)
    unmakeable = memory_score([331.0, 329.0, 330.0], [17.0, 16.0, 18.0], REF_NLL, REF_PSNR, NORMAL, bootstrap_samples=200)
    assert knows.value > 0.9 and knows.ci_low <= knows.value <= knows.ci_high
    assert never.value < 0.4 and never.ci_high < knows.ci_low
    # Likely seeds that do not regenerate the images (17 dB against 31) are no memory at all.
    assert unmakeable.value == 0.0 and unmakeable.n_reconstructed == 0
    assert knows.psnr_cut == pytest.approx(31.0 - 5.0)


def test_direction_matters_unlike_d_n():
    # E's seeds far *less* likely than N's draws (an image no model makes) and far *more* likely both
    # move d_N away from 1; the memory score reads only the first as forgetting.
    from unlearn_guard.stats.functional import memory_relative_distance

    unlikely = [400.0, 405.0, 398.0]
    likely = [320.0, 325.0, 318.0]  # likelier than R (330), still inside N's typical set (mean 360, sd 8)
    assert memory_relative_distance(unlikely, REF_NLL, NORMAL) > 1.5 and memory_relative_distance(likely, REF_NLL, NORMAL) > 1.5
    assert memory_score(unlikely, [31.0] * 3, REF_NLL, REF_PSNR, NORMAL, bootstrap_samples=0).value == 0.0
    assert memory_score(likely, [31.0] * 3, REF_NLL, REF_PSNR, NORMAL, bootstrap_samples=0).value == 1.0


def test_diverged_images_count_as_no_memory_and_are_counted():
    result = memory_score([330.0, math.nan, 330.0], [31.0, math.nan, 31.0], REF_NLL, REF_PSNR, NORMAL, bootstrap_samples=0)
    assert result.value == pytest.approx(2 / 3) and result.n_diverged == 1 and result.n_images == 3
    assert math.isnan(result.ci_low) and result.per_image[1] == 0.0


def test_interval_is_seeded_and_resamples_every_set():
    args = ([335.0, 340.0, 345.0, 350.0], [31.0, 30.0, 29.0, 31.0], REF_NLL, REF_PSNR, NORMAL)
    a = memory_score(*args, bootstrap_samples=300, seed=3)
    b = memory_score(*args, bootstrap_samples=300, seed=3)
    c = memory_score(*args, bootstrap_samples=300, seed=4)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high) and (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)
    assert 0.0 <= a.ci_low < a.value < a.ci_high <= 1.0
    narrower = memory_score(*args, bootstrap_samples=300, seed=3, confidence=0.5)
    assert narrower.ci_high - narrower.ci_low < a.ci_high - a.ci_low
    assert a.to_dict()["psnr_cut"] == pytest.approx(26.0)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"nll_reference": [330.0, math.nan, math.nan, math.nan]}, InsufficientDataError, "at least 2 reference"),
        ({"nll_reference": [365.0, 366.0, 364.0, 365.0]}, InsufficientDataError, "not below the N set"),
        ({"psnr_erased": [31.0]}, InputError, "same non-zero length"),
        ({"psnr_margin_db": -1.0}, InputError, "psnr_margin_db"),
        ({"typical_sigmas": 0.0}, InputError, "typical_sigmas"),
        ({"nll_erased": [[330.0, 331.0]], "psnr_erased": [[31.0, 31.0]]}, InputError, "1-D"),
    ],
)
def test_bad_input_is_named(kwargs, error, match):
    arguments = {"nll_erased": [330.0, 331.0], "psnr_erased": [31.0, 31.0], "nll_reference": REF_NLL,
                 "psnr_reference": REF_PSNR, "nll_normal": NORMAL, "bootstrap_samples": 0, **kwargs}
    with pytest.raises(error, match=match):
        memory_score(**arguments)
