"""Configs: SPEC constants in the presets, validation that names the field, JSON round trip."""

from __future__ import annotations

import pytest

from unlearn_guard.config import PRESETS, InversionConfig, ProbeConfig, RegularizationConfig
from unlearn_guard.errors import InputError


def test_mofc_preset_has_the_released_constants():
    mofc = PRESETS["mofc"]
    inv, reg = mofc.inversion, mofc.inversion.regularization
    assert (inv.num_steps, inv.renoise_steps, inv.early_window, inv.late_window) == (50, 5, (0, 5), (8, 10))
    assert inv.window_split_timestep == 250 and inv.guidance_scale == 1.0 and inv.z0_mode == "sample"
    assert (reg.lambda_kl, reg.lambda_ac, reg.num_reg_steps, reg.num_ac_rolls, reg.kl_grad_clip, reg.patch_size) == (
        0.065, 20.0, 4, 5, 100.0, 4)
    assert mofc.distance == "mofc" and mofc.quantize_psnr and mofc.n_normal == 50
    assert inv.window_for(241) == (0, 5) and inv.window_for(261) == (8, 10)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_json_round_trip(name):
    config = PRESETS[name].replace(seed=7, batch_size=3)
    again = ProbeConfig.from_json(config.to_json())
    assert again == config and again.preset == name


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: RegularizationConfig(lambda_kl=-1), "lambda_kl"),
        (lambda: RegularizationConfig(num_ac_rolls=0), "num_ac_rolls"),
        (lambda: InversionConfig(num_steps=0), "num_steps"),
        (lambda: InversionConfig(renoise_steps=-1), "renoise_steps"),
        (lambda: InversionConfig(early_window=(3, 1)), "early_window"),
        (lambda: InversionConfig(guidance_scale=0.5), "guidance_scale"),
        (lambda: InversionConfig(z0_mode="median"), "z0_mode"),
        (lambda: ProbeConfig(distance="kl"), "distance"),
        (lambda: ProbeConfig(confidence=1.5), "confidence"),
        (lambda: ProbeConfig(batch_size=0), "batch_size"),
        (lambda: ProbeConfig(resize="stretch"), "resize"),
        (lambda: ProbeConfig.from_preset("slow"), "unknown preset 'slow'"),
        (lambda: PRESETS["mofc"].replace(colour="red"), "no field"),
        (lambda: ProbeConfig.from_dict({"presett": "mofc"}), "unknown fields"),
        (lambda: ProbeConfig(rng="numpy"), "rng"),
        (lambda: ProbeConfig(image_seed=42), "image_seed"),  # only meaningful with rng="released"
        (lambda: ProbeConfig(rng="released", image_seed=1.5), "image_seed"),
        (lambda: ProbeConfig(normal_seed="0"), "normal_seed"),
        (lambda: ProbeConfig(seed=True), "seed"),
    ],
)
def test_invalid_values_name_the_field(build, match):
    with pytest.raises(InputError, match=match):
        build()


def test_overrides_relabel_only_when_the_science_changes():
    assert ProbeConfig.from_preset("fast", seed=3, progress=False).preset == "fast"
    assert ProbeConfig.from_preset("fast", distance="w1").preset == "custom"
    assert PRESETS["mofc"].replace(inversion=InversionConfig(num_steps=20)).preset == "custom"
    assert PRESETS["mofc"].replace(inversion=InversionConfig()).preset == "mofc"  # same values: still mofc


def test_the_released_random_stream_is_bookkeeping_not_science():
    released = ProbeConfig.from_preset("mofc", rng="released", image_seed=7, normal_seed=3)
    assert released.preset == "mofc" and released.image_generator_seed == 7
    assert ProbeConfig.from_preset("mofc", rng="released").image_generator_seed == 42  # the released code's seed
    assert PRESETS["mofc"].image_generator_seed is None  # per-image derived seeds by default
    again = ProbeConfig.from_json(released.to_json())
    assert again == released and again.rng == "released"


def test_the_cli_reaches_the_released_stream_through_set():
    from unlearn_guard.gate.knobs import apply_settings

    config = apply_settings(PRESETS["mofc"], ["rng=released", "image_seed=42", "normal_seed=none"])
    assert (config.rng, config.image_seed, config.normal_seed, config.preset) == ("released", 42, None, "mofc")
