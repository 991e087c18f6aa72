"""Every shipping format of published erased checkpoints loads, or is refused by name in one line.

Each file is built here from the tiny seeded model: "erased" weights are the base weights plus
seeded noise, written in the layout a method ships (docs/checkpoints.md). A loaded model must hold
exactly the expected tensors: the file's tensors where it has them, the base model's elsewhere.
ldm-layout files are written with the test-only reverse map in tests/helpers/ldm_keys.py, which a
round trip through diffusers' own converters checks first. One tiny model is shared per module.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
)
from safetensors.torch import save_file

from helpers.ldm_keys import pipeline_to_ldm, text_encoder_to_ldm, unet_to_ldm
from unlearn_guard.config import InversionConfig, ProbeConfig
from unlearn_guard.errors import InputError, ModelError, NonFiniteWeightsError, StateDictMismatchError
from unlearn_guard.gate.checkpoints import Checkpoint, discover_checkpoints
from unlearn_guard.gate.inputs import load_checkpoint_model
from unlearn_guard.models import load_model, load_text_encoder
from unlearn_guard.models.formats import convert_ldm_unet_names
from unlearn_guard.models.tiny import build_tiny_components
from unlearn_guard.probe import probe

# A probe that only has to run: 3 DDIM steps, no ReNoise, few bootstrap draws, open typical band.
CHEAP_PROBE = ProbeConfig(preset="custom", inversion=InversionConfig(num_steps=3, renoise_steps=0, early_window=(0, 0),
                                                                     late_window=(0, 0)),
                          n_normal=4, bootstrap_samples=20, progress=False, memory_typical_sigmas=1e6)


def _perturbed(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {k: v + 0.05 * torch.randn(v.shape, generator=generator) for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The tiny base model saved as a pipeline folder, and erased UNet / text-encoder tensors."""
    root = tmp_path_factory.mktemp("formats")
    parts = build_tiny_components(0)
    pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(root / "base")
    return {"root": root, "base": root / "base", "parts": parts,
            "unet": {k: v.clone() for k, v in parts["unet"].state_dict().items()},
            "te": {k: v.clone() for k, v in parts["text_encoder"].state_dict().items()},
            "erased_unet": _perturbed(parts["unet"], 11), "erased_te": _perturbed(parts["text_encoder"], 12)}


def _subset(state: dict, keep) -> dict:
    return {k: v for k, v in state.items() if keep(k)}


def _attn2(key: str) -> bool:
    return ".attn2." in key


def assert_holds(module: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    """`module` holds exactly `expected`, tensor by tensor."""
    actual = module.state_dict()
    assert set(actual) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, rtol=0, atol=0, msg=key)


def test_the_reverse_ldm_map_round_trips_through_diffusers_converters(world):
    parts = world["parts"]
    ldm = pipeline_to_ldm(parts["unet"], parts["vae"], parts["text_encoder"])
    for converted, module in ((convert_ldm_unet_checkpoint(ldm, parts["unet"].config), parts["unet"]),
                              (convert_ldm_vae_checkpoint(ldm, parts["vae"].config), parts["vae"])):
        expected = module.state_dict()
        assert set(converted) == set(expected)
        assert all(torch.equal(converted[k], expected[k]) for k in expected)
    text = convert_ldm_clip_checkpoint(ldm)
    assert {k.removeprefix("text_model.") for k in text} == {k.removeprefix("text_model.") for k in world["te"]}


def test_partial_ldm_names_convert_as_the_whole_file_would(world):
    """The padded walk of diffusers' converter names each attn2 key as a full conversion does."""
    config = world["parts"]["unet"].config
    full = unet_to_ldm(world["unet"], config)
    whole = {v: k for k, v in convert_ldm_unet_names([k.removeprefix("model.diffusion_model.") for k in full],
                                                     config).items()}
    partial_keys = [k.removeprefix("model.diffusion_model.") for k in full if ".attn2." in k]
    partial = convert_ldm_unet_names(partial_keys, config)
    assert len(partial) == len(partial_keys) and all(whole[ldm] == name for name, ldm in partial.items())


# ---------------------------------------------------------------------------------------- formats
def _ldm_whole(world):
    parts = world["parts"]
    erased = {**unet_to_ldm(world["erased_unet"], parts["unet"].config), **text_encoder_to_ldm(world["erased_te"]),
              **{k: v for k, v in pipeline_to_ldm(parts["unet"], parts["vae"], parts["text_encoder"]).items()
                 if k.startswith("first_stage_model.")}, "betas": torch.linspace(0, 1, 10)}
    return erased


FORMATS = {  # name: (file name, build the saved object, expected UNet, expected TE (None: base), format, summary text)
    "esd_x_attn2_safetensors": (
        "esd-x.safetensors", lambda w: _subset(w["erased_unet"], _attn2),
        lambda w: {**w["unet"], **_subset(w["erased_unet"], _attn2)}, None, "diffusers UNet", "(attn2 only)"),
    "esd_u_not_attn2_pt": (
        "esd-u.pt", lambda w: _subset(w["erased_unet"], lambda k: not _attn2(k)),
        lambda w: {**w["unet"], **_subset(w["erased_unet"], lambda k: not _attn2(k))}, None, "diffusers UNet",
        "(all but attn2)"),
    "uce_to_k_to_v": (
        "uce.safetensors", lambda w: _subset(w["erased_unet"], lambda k: re.search(r"attn2\.to_[kv]\.", k)),
        lambda w: {**w["unet"], **_subset(w["erased_unet"], lambda k: re.search(r"attn2\.to_[kv]\.", k))}, None,
        "diffusers UNet", "(attn2 to_k/to_v only)"),
    "ldm_whole_ckpt": (
        "erased.ckpt", lambda w: {"state_dict": _ldm_whole(w), "global_step": 100},
        lambda w: w["erased_unet"], lambda w: w["erased_te"], "ldm checkpoint", "VAE) tensors ignored"),
    "ldm_whole_safetensors": (
        "erased-ldm.safetensors", _ldm_whole, lambda w: w["erased_unet"], lambda w: w["erased_te"], "ldm checkpoint",
        "replaced 208 of 208 UNet tensors and"),
    "ldm_partial_delta": (
        "delta_erased.ckpt",
        lambda w: {"state_dict": _subset(unet_to_ldm(w["erased_unet"], w["parts"]["unet"].config), _attn2)},
        lambda w: {**w["unet"], **_subset(w["erased_unet"], _attn2)}, None, "partial ldm delta", "(attn2 only)"),
    "nested_unet_and_text_encoder_bin": (
        "delta.bin", lambda w: {"unet": _subset(w["erased_unet"], _attn2), "text_encoder": w["erased_te"]},
        lambda w: {**w["unet"], **_subset(w["erased_unet"], _attn2)}, lambda w: w["erased_te"],
        "diffusers UNet + text encoder (nested under unet.)", "36 of 36 text-encoder tensors"),
    "nested_module_dicts_esd_demo": (
        "esd-demo.pt", lambda w: _module_dicts(_subset(w["erased_unet"], _attn2)),
        lambda w: {**w["unet"], **_subset(w["erased_unet"], _attn2)}, None, "diffusers UNet (nested under unet.)",
        "(attn2 only)"),
}


def _module_dicts(state: dict) -> dict:
    """{"unet.<module>": {"weight": t, "bias": t}}, as the ESD diffusers demo saves."""
    nested: dict = {}
    for key, value in state.items():
        module, leaf = key.rsplit(".", 1)
        nested.setdefault("unet." + module, {})[leaf] = value
    return nested


def _save(obj: dict, file: Path) -> None:
    if file.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in obj.items()}, str(file))
    else:
        torch.save(obj, file)


@pytest.mark.parametrize("kind", FORMATS)
def test_each_format_loads_the_expected_tensors(kind, world, tmp_path):
    name, build, expected_unet, expected_te, fmt, summary = FORMATS[kind]
    _save(build(world), tmp_path / name)

    model = load_model(world["base"], unet_weights=tmp_path / name)

    assert_holds(model.unet, expected_unet(world))
    assert_holds(model.text_encoder, expected_te(world) if expected_te else world["te"])
    (record,) = model.loaded_weights
    assert record["format"] == fmt and summary in record["summary"], record["summary"]
    assert record["sha256"] and len(record["sha256"]) == 64


def test_a_probe_runs_on_a_partial_file_and_records_it(world, tmp_path):
    save_file(_subset(world["erased_unet"], _attn2), str(tmp_path / "esd-x.safetensors"))
    model = load_model(world["base"], unet_weights=tmp_path / "esd-x.safetensors")
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))

    result = probe(model, images, "a cat", config=CHEAP_PROBE)

    (record,) = result.provenance["loaded_weights"]
    assert record["format"] == "diffusers UNet" and record["subset"] == "attn2 only"
    assert record["replaced"] == len(_subset(world["unet"], _attn2)) and record["total"] == len(world["unet"])


# ---------------------------------------------------------------------------------------- text encoders
@pytest.mark.parametrize("prefix", ["text_encoder.text_model.", "text_model.", ""])
def test_text_encoder_state_dict_file_overlays_a_copy(prefix, world, tmp_path):
    state = {prefix + k.removeprefix("text_model."): v for k, v in world["erased_te"].items()}
    state["embedding.weight"] = torch.zeros(3, 4)  # saved beside the encoder by some wrappers: ignored, said
    save_file(state, str(tmp_path / "te.safetensors"))
    base = load_model(world["base"])

    model = load_model(world["base"], text_encoder=tmp_path / "te.safetensors")

    assert_holds(model.text_encoder, world["erased_te"])
    assert model.text_encoder is not base.text_encoder
    assert "embedding.* tensors ignored" in model.loaded_weights[0]["summary"]


def test_text_encoder_from_a_folder_and_subfolder(world, tmp_path):
    encoder = build_tiny_components(0)["text_encoder"]
    encoder.load_state_dict(world["erased_te"])
    encoder.save_pretrained(tmp_path / "AdvUnlearn" / "nudity_unlearned")

    model = load_model(world["base"], text_encoder=tmp_path / "AdvUnlearn", text_encoder_subfolder="nudity_unlearned")

    assert_holds(model.text_encoder, world["erased_te"])
    assert model.loaded_weights[0]["format"] == "CLIPTextModel folder (subfolder nudity_unlearned)"


def test_a_hub_text_encoder_not_in_the_cache_fails_in_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="not in the local Hugging Face cache") as caught:
        load_text_encoder("unlearn-guard-tests/no-such-encoder", subfolder="nudity_unlearned")
    assert "\n" not in str(caught.value) and "hf download unlearn-guard-tests/no-such-encoder" in str(caught.value)


# ---------------------------------------------------------------------------------------- LoRA (kohya / SPM)
def test_kohya_lora_loads_through_diffusers_converter_at_scale_one(world, tmp_path):
    """SPM's file: lora_unet_<module>.lora_down/lora_up/alpha on every Linear/Conv of the transformers."""
    base = build_tiny_components(0)["unet"]
    generator, state, merged = torch.Generator().manual_seed(5), {}, dict(world["unet"])
    rank, alpha = 2, 1.0
    for name, module in base.named_modules():
        if ".attentions." not in name or not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            continue
        weight = module.weight
        down = 0.1 * torch.randn(rank, *weight.shape[1:], generator=generator)
        up = 0.1 * torch.randn(weight.shape[0], rank, *([1, 1] if weight.ndim == 4 else []), generator=generator)
        key = "lora_unet_" + name.replace(".", "_")
        state |= {f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up, f"{key}.alpha": torch.tensor(alpha)}
        delta = (up.flatten(1) @ down.flatten(1)).reshape(weight.shape) * alpha / rank
        merged[name + ".weight"] = world["unet"][name + ".weight"] + delta
    save_file(state, str(tmp_path / "spm.safetensors"), metadata={"ss_network_dim": str(rank)})

    model = load_model(world["base"], lora=tmp_path / "spm.safetensors")

    reference = build_tiny_components(0)["unet"]
    reference.load_state_dict(merged)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    context = model.encode_prompts(["a cat"])
    expected = reference(latents, 500, encoder_hidden_states=context).sample
    torch.testing.assert_close(model.predict_noise(latents, 500, context), expected, rtol=0, atol=1e-5)
    plain = build_tiny_components(0)["unet"](latents, 500, encoder_hidden_states=context).sample
    assert not torch.allclose(expected, plain, atol=1e-3)  # the adapter is visible: the check can fail
    (record,) = model.loaded_weights
    assert record["format"] == "kohya-style LoRA (converted by diffusers)"
    assert "scale 1" in record["summary"] and "gating (SPM) is not reproduced" in record["summary"]


# ---------------------------------------------------------------------------------------- base model files
def test_a_single_file_base_model_loads_with_a_local_config(world, tmp_path):
    parts = world["parts"]
    save_file({k: v.contiguous() for k, v in pipeline_to_ldm(parts["unet"], parts["vae"], parts["text_encoder"]).items()},
              str(tmp_path / "sd.safetensors"))

    model = load_model(tmp_path / "sd.safetensors", config=world["base"])

    assert_holds(model.unet, world["unet"])
    assert_holds(model.text_encoder, world["te"])
    assert_holds(model.vae, parts["vae"].state_dict())
    with pytest.raises(InputError, match="needs config=") as caught:
        load_model(tmp_path / "sd.safetensors")
    assert "\n" not in str(caught.value)


def test_a_single_file_models_fingerprint_holds_its_config_folder(world, tmp_path):
    """The gate's cache key: the same single file read with other configs is another model."""
    import shutil

    from unlearn_guard.gate.checkpoints import model_fingerprint

    (tmp_path / "sd.safetensors").write_bytes(b"stand-in bytes: only hashed here")
    configs = tmp_path / "configs"
    shutil.copytree(world["base"], configs)
    first = model_fingerprint(str(tmp_path / "sd.safetensors"), configs)
    assert first["config_files"][1] >= 1 and first == model_fingerprint(str(tmp_path / "sd.safetensors"), configs)
    scheduler = configs / "scheduler" / "scheduler_config.json"
    scheduler.write_text(scheduler.read_text().replace("{", '{"steps_offset_note": 1,', 1))
    assert model_fingerprint(str(tmp_path / "sd.safetensors"), configs)["config_files"] != first["config_files"]
    assert "config" not in model_fingerprint(str(tmp_path / "sd.safetensors"))


def _unet_folder(world, folder: Path, **save) -> None:
    unet = build_tiny_components(0)["unet"]
    unet.load_state_dict(world["erased_unet"])
    unet.save_pretrained(folder, **save)


def test_checkpoint_folders_take_variants_shards_ema_partial_and_ldm_files(world, tmp_path):
    root = tmp_path / "run"
    _unet_folder(world, root / "checkpoint-1" / "unet", variant="fp16")
    _unet_folder(world, root / "checkpoint-2" / "unet", max_shard_size="60KB")
    _unet_folder(world, root / "checkpoint-3" / "unet")
    _unet_folder(world, root / "checkpoint-3" / "unet_ema")
    (root / "checkpoint-4").mkdir()
    save_file(_subset(world["erased_unet"], _attn2), str(root / "checkpoint-4" / "esd-x.safetensors"))
    (root / "checkpoint-5").mkdir()
    torch.save({"state_dict": _ldm_whole(world)}, root / "checkpoint-5" / "erased.ckpt")
    assert any(p.name.endswith(".index.json") for p in (root / "checkpoint-2" / "unet").iterdir())

    found = discover_checkpoints(root)

    formats = []
    for checkpoint in found:
        model = load_checkpoint_model(str(world["base"]), checkpoint)
        partial = checkpoint.name == "checkpoint-4"
        assert_holds(model.unet, {**world["unet"], **_subset(world["erased_unet"], _attn2)} if partial
                     else world["erased_unet"])
        formats.append(model.loaded_weights[0]["format"])
    assert formats == ["diffusers UNet folder (fp16 variant)", "diffusers UNet folder (sharded)",
                       "diffusers UNet folder", "diffusers UNet", "ldm checkpoint"]
    assert "unet_ema/ ignored" in found[2].weights.describe()


# ---------------------------------------------------------------------------------------- refusals
class _Reduce:
    """Unpickling this runs `touch <marker>`: weights_only must refuse it unread."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def _receler(folder: Path) -> Path:
    torch.save({"down_blocks.0.attentions.0": {"down.weight": torch.zeros(2, 32), "down.bias": torch.zeros(2),
                                               "up.weight": torch.zeros(32, 2), "up.bias": torch.zeros(32)}},
               folder / "eraser_weights.pt")
    (folder / "eraser_config.json").write_text(json.dumps({"eraser_type": "adapter", "eraser_rank": 2}))
    return folder / "eraser_weights.pt"


def _unknown(folder: Path, world) -> Path:
    save_file({**_subset(world["erased_unet"], _attn2), "extra_head.proj.weight": torch.zeros(2, 2)},
              str(folder / "mixed.safetensors"))
    return folder / "mixed.safetensors"


def _unknown_only(folder: Path, world) -> Path:
    save_file({"encoder.layer.0.weight": torch.zeros(2, 2)}, str(folder / "other.safetensors"))
    return folder / "other.safetensors"


def _misshapen(folder: Path, world) -> Path:
    key = next(k for k in world["unet"] if k.endswith("attn2.to_k.weight"))
    save_file({key: torch.zeros(3, 3)}, str(folder / "bad-shape.safetensors"))
    return folder / "bad-shape.safetensors"


def _non_finite(folder: Path, world) -> Path:
    key = next(k for k in world["unet"] if k.endswith("attn2.to_k.weight"))
    value = world["erased_unet"][key].clone()
    value[0, 0] = float("nan")
    save_file({key: value}, str(folder / "nan.safetensors"))
    return folder / "nan.safetensors"


def _pickle_with_code(folder: Path, world) -> Path:
    torch.save({"state_dict": {}, "hook": _Reduce(folder / "pwned")}, folder / "code.pt")
    return folder / "code.pt"


REFUSALS = {  # name: (make the file, error, text the one line must hold)
    "receler": (lambda folder, world: _receler(folder), ModelError, "Receler"),
    "unknown_keys": (_unknown, StateDictMismatchError, "looks like a diffusers UNet state dict, but 1 of its keys"),
    "only_unknown_keys": (_unknown_only, StateDictMismatchError, "no weight layout this loader knows"),
    "wrong_shape": (_misshapen, StateDictMismatchError, "file (3, 3) vs model"),
    "nan": (_non_finite, NonFiniteWeightsError, "NaN or Inf"),
    "pickle_with_code": (_pickle_with_code, ModelError, "could run arbitrary code"),
}


@pytest.mark.parametrize("kind", REFUSALS)
def test_refusals_name_the_file_and_the_reason(kind, world, tmp_path):
    make, error, text = REFUSALS[kind]
    file = make(tmp_path, world)
    with pytest.raises(error, match=re.escape(text)) as caught:
        load_model(world["base"], unet_weights=file)
    message = str(caught.value)
    assert file.name in message and "Traceback" not in message
    assert len(message.splitlines()) <= 3, message
    assert not (tmp_path / "pwned").exists()


def test_sld_is_refused_by_name(world, tmp_path):
    folder = tmp_path / "sld"
    folder.mkdir()
    index = json.loads((world["base"] / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionPipelineSafe"}))
    with pytest.raises(ModelError, match="SLD .* guidance pipeline over plain Stable Diffusion") as caught:
        load_model(folder)
    assert "\n" not in str(caught.value) and "sld" in str(caught.value)


def test_lightning_checkpoint_is_refused_and_its_hint_converts_it(world, tmp_path):
    """Selective Amnesia ships Lightning .ckpt files: state_dict beside callbacks and hyper-parameters."""
    file = tmp_path / "sa-erased.ckpt"
    torch.save({"state_dict": _ldm_whole(world), "epoch": 3, "optimizer_states": [{"state": {}}],
                "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(0.5)}},
                "hyper_parameters": argparse.Namespace(lr=1e-5)}, file)
    with pytest.raises(ModelError, match="argparse.Namespace") as caught:
        load_model(world["base"], unet_weights=file)
    message = str(caught.value)
    assert "\n" not in message and "sa-erased.ckpt" in message

    command = message[message.index("python -c "):]  # the hint, run as written on a file we trust
    program, flag, code = shlex.split(command)
    assert (program, flag) == ("python", "-c")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    model = load_model(world["base"], unet_weights=tmp_path / "sa-erased.safetensors")
    assert_holds(model.unet, world["erased_unet"])
    assert model.loaded_weights[0]["format"] == "ldm checkpoint"


# ---------------------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def image_folders(world):
    from unlearn_guard.gate.folders import save_image_folder

    pixels = (torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 255).to(torch.uint8)
    save_image_folder(world["root"] / "concept", pixels, ["a cat"] * 2, prefix="cat")
    save_image_folder(world["root"] / "reference", pixels.flip(0), ["a dog"] * 2, prefix="dog")
    return world["root"] / "concept", world["root"] / "reference"


CLI_CHEAP = ["--preset", "fast", "--set", "inversion.num_steps=3", "--set", "inversion.renoise_steps=0",
             "--set", "bootstrap_samples=20", "--set", "n_normal=4", "--set", "memory_typical_sigmas=1e6",
             "--thumbnails", "0", "--device", "cpu"]


def test_cli_probe_says_which_format_it_took_and_records_it(world, image_folders, tmp_path, capsys):
    from unlearn_guard.cli import main

    torch.save({"state_dict": _subset(unet_to_ldm(world["erased_unet"], world["parts"]["unet"].config), _attn2)},
               tmp_path / "delta_cat.ckpt")
    code = main(["probe", "--model", str(world["base"]), "--unet-weights", str(tmp_path / "delta_cat.ckpt"),
                 "--concept-images", str(image_folders[0]), "--output", str(tmp_path / "probe.json"), *CLI_CHEAP])
    out = capsys.readouterr().out
    assert code == 0
    assert "loaded unet_weights delta_cat.ckpt: partial ldm delta, replaced 20 of 208 UNet tensors (attn2 only)" in out
    (record,) = json.loads((tmp_path / "probe.json").read_text())["loaded_weights"]
    assert record["format"] == "partial ldm delta" and record["replaced"] == 20 and len(record["sha256"]) == 64


def test_cli_gate_takes_a_checkpoints_folder_of_partial_and_ldm_files(world, image_folders, tmp_path, capsys):
    from unlearn_guard.cli import main
    from unlearn_guard.files import file_sha256

    root = tmp_path / "run"
    (root / "checkpoint-10").mkdir(parents=True)
    save_file(_subset(world["erased_unet"], _attn2), str(root / "checkpoint-10" / "esd-x.safetensors"))
    (root / "checkpoint-20").mkdir()
    torch.save({"state_dict": _ldm_whole(world)}, root / "checkpoint-20" / "erased.ckpt")
    code = main(["gate", "--model", str(world["base"]), "--checkpoints", str(root), "--max-memory", "1",
                 "--concept-images", str(image_folders[0]), "--reference-images", str(image_folders[1]),
                 "--output", str(tmp_path / "gate"), *CLI_CHEAP])
    out = capsys.readouterr().out
    assert code in (0, 1, 2), out
    assert "checkpoint-10: loaded unet_weights esd-x.safetensors: diffusers UNet, replaced 20 of 208" in out
    report = json.loads((tmp_path / "gate" / "gate.json").read_text())
    loaded = {c["name"]: c["loaded_weights"] for c in report["checkpoints"]}
    assert loaded["checkpoint-10"][0]["subset"] == "attn2 only"
    assert loaded["checkpoint-20"][0]["format"] == "ldm checkpoint"
    assert loaded["checkpoint-20"][0]["sha256"] == file_sha256(root / "checkpoint-20" / "erased.ckpt")
