"""Behaviour tests for loading models and erased weights, and for leaving module state untouched.

Every model is a tiny seeded one from `build_tiny_components`, saved to and loaded from tmp
folders; nothing touches the network. "Erased" weights are the base weights plus seeded noise,
so a test can tell the erased model's predictions from the base model's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from safetensors.torch import load_file, save_file

from unlearn_guard.errors import InputError, ModelError, StateDictMismatchError
from unlearn_guard.models import (
    DiffusionModel,
    load_model,
    load_text_encoder,
    load_unet_state_dict,
    preserve_module_state,
    snapshot_module_state,
)
from unlearn_guard.models.tiny import TinyModelSpec, build_tiny_components

PROMPT = "a photo of a cat"
TIMESTEP = 500
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
OTHER_CHANNELS = TinyModelSpec(unet_channels=(16, 32))
# Same float32 weights, different memory: weights read from safetensors files are not 64-byte
# aligned, so BLAS takes other kernels and results move by ~1e-6 (1.1e-6 seen). Erased weights
# move predictions by > 1e-2, so 1e-5 still separates "same model" from "other model".
SAME = dict(rtol=0.0, atol=1e-5)
OTHER_ATOL = 1e-3


# ---------------------------------------------------------------------------------------- helpers
def make_pipe(seed: int = 0) -> StableDiffusionPipeline:
    return StableDiffusionPipeline(
        **build_tiny_components(seed), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )


def eps(model: DiffusionModel) -> torch.Tensor:
    """The model's noise prediction (1, 4, 8, 8) on fixed latents, timestep and prompt."""
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    return model.predict_noise(latents, TIMESTEP, model.encode_prompts([PROMPT]))


def with_unet(unet: torch.nn.Module, seed: int = 0) -> DiffusionModel:
    """The tiny base model (seed) with `unet` swapped in."""
    parts = build_tiny_components(seed)
    parts["unet"] = unet
    return DiffusionModel.from_components(**parts)


def perturb_(module: torch.nn.Module, seed: int, scale: float = 0.05) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(scale * torch.randn(param.shape, generator=generator))
    return module


def randomize_lora_b_(module: torch.nn.Module, seed: int = 3) -> torch.nn.Module:
    """LoRA B starts at zero (adapter = identity); non-zero B makes the adapter visible."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "lora_B" in name:
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))
    return module


def lora_config() -> LoraConfig:
    return LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS)  # alpha != r: scaling must survive saving


def save_lora(folder: Path, fmt: str, spec: TinyModelSpec = TinyModelSpec()) -> torch.nn.Module:
    """Train-like LoRA UNet (random B) saved in `fmt`; returns the in-memory UNet that produced it."""
    unet = build_tiny_components(0, spec)["unet"]
    if fmt == "diffusers":
        unet.add_adapter(lora_config())
        randomize_lora_b_(unet)
        StableDiffusionPipeline.save_lora_weights(
            folder,
            unet_lora_layers=get_peft_model_state_dict(unet),
            unet_lora_adapter_metadata=unet.peft_config["default"].to_dict(),
        )
        return unet
    peft_unet = randomize_lora_b_(get_peft_model(unet, lora_config()))
    peft_unet.save_pretrained(folder)
    return peft_unet


@pytest.fixture(scope="module")
def pipe_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pipe")
    make_pipe(0).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def base_eps() -> torch.Tensor:
    return eps(DiffusionModel.from_pipeline(make_pipe(0)))


# ---------------------------------------------------------------------------------------- sources
SOURCES = {
    "pipeline": lambda folder: make_pipe(0),
    "diffusion_model": lambda folder: DiffusionModel.from_pipeline(make_pipe(0)),
    "folder_str": lambda folder: str(folder),
    "folder_path": lambda folder: folder,
}


@pytest.mark.parametrize("kind", SOURCES)
def test_every_source_gives_the_base_prediction(kind, pipe_folder, base_eps):
    model = load_model(SOURCES[kind](pipe_folder))
    assert isinstance(model, DiffusionModel)
    torch.testing.assert_close(eps(model), base_eps, **SAME)


def test_from_pipeline_keeps_the_pipeline_parts():
    pipe = make_pipe(0)
    model = DiffusionModel.from_pipeline(pipe)
    assert model.unet is pipe.unet and model.vae is pipe.vae and model.text_encoder is pipe.text_encoder
    assert model.scheduler_config["num_train_timesteps"] == pipe.scheduler.config.num_train_timesteps


def test_torch_dtype_casts_every_part(pipe_folder):
    model = load_model(pipe_folder, torch_dtype=torch.float64)
    assert {p.dtype for m in model.modules() for p in m.parameters()} == {torch.float64}


@pytest.mark.parametrize(
    "break_pipe, message",
    [
        (lambda pipe: pipe.vae.to(torch.float64), "different dtypes"),
        (lambda pipe: pipe.text_encoder.to("meta"), "different devices"),
    ],
    ids=["dtype", "device"],
)
def test_parts_that_disagree_raise(break_pipe, message):
    pipe = make_pipe(0)
    break_pipe(pipe)
    with pytest.raises(ModelError, match=message):
        load_model(pipe)


def _empty_folder(tmp_path: Path) -> Path:
    (tmp_path / "empty_folder").mkdir()
    return tmp_path / "empty_folder"


def _a_file(tmp_path: Path) -> Path:
    (tmp_path / "unet.safetensors").write_bytes(b"")
    return tmp_path / "unet.safetensors"


BAD_SOURCES = {  # (make the source, error, text the message must hold)
    "missing_folder": (lambda tmp_path: tmp_path / "no_such_pipeline", InputError, "no_such_pipeline"),
    "empty_folder": (_empty_folder, ModelError, "model_index.json"),
    "file": (_a_file, InputError, "unet_weights="),
    "wrong_type": (lambda tmp_path: 42, InputError, "got a int"),
}


@pytest.mark.parametrize("kind", BAD_SOURCES)
def test_bad_sources_raise_and_say_why(kind, tmp_path):
    make_source, error, text = BAD_SOURCES[kind]
    with pytest.raises(error, match=text):
        load_model(make_source(tmp_path))


def test_hub_id_not_in_the_cache_fails_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="could not be found locally") as caught:
        load_model("unlearn-guard-tests/no-such-model-xyz")
    assert "save_pretrained" in str(caught.value)


# ---------------------------------------------------------------------------------------- UNet weights
def save_torch(state: dict, file: Path) -> None:
    torch.save(state, file)


WEIGHT_FILES = {
    "safetensors": ("unet.safetensors", lambda state, file: save_file(state, str(file))),
    "pt": ("unet.pt", save_torch),
    "pth_wrapped_state_dict": ("unet.pth", lambda state, file: save_torch({"state_dict": state, "epoch": 3}, file)),
    "ckpt_wrapped_model": ("unet.ckpt", lambda state, file: save_torch({"model": state}, file)),
    "bin": ("diffusion_pytorch_model.bin", save_torch),
}


@pytest.mark.parametrize("kind", WEIGHT_FILES)
def test_erased_unet_weights_replace_the_base_ones(kind, tmp_path, pipe_folder, base_eps):
    erased_unet = perturb_(build_tiny_components(0)["unet"], seed=11)
    name, save = WEIGHT_FILES[kind]
    save(erased_unet.state_dict(), tmp_path / name)

    model = load_model(pipe_folder, unet_weights=tmp_path / name)

    torch.testing.assert_close(eps(model), eps(with_unet(erased_unet)), **SAME)
    assert not torch.allclose(eps(model), base_eps, atol=OTHER_ATOL)


def _drop(state, key):
    state.pop(key)
    return state


def _add(state, key):
    state[key] = torch.zeros(3)
    return state


def _reshape(state, key):
    state[key] = torch.zeros(5)
    return state


MISMATCHES = [  # (edit of the state dict, key the message must name, strict)
    (_drop, "conv_in.weight", True),
    (_add, "extra_block.weight", True),
    (_reshape, "conv_out.bias", True),
    (_reshape, "conv_out.bias", False),  # strict=False tolerates missing keys, never wrong shapes
]


@pytest.mark.parametrize("edit, key, strict", MISMATCHES, ids=["missing", "unexpected", "shape", "shape_not_strict"])
def test_mismatched_state_dict_names_the_keys(edit, key, strict, tmp_path):
    file = tmp_path / "bad.safetensors"
    save_file(edit(build_tiny_components(1)["unet"].state_dict(), key), str(file))
    unet = build_tiny_components(0)["unet"]
    before = snapshot_module_state(unet)
    with pytest.raises(StateDictMismatchError, match=key) as caught:
        load_unet_state_dict(unet, file, strict=strict)
    assert "bad.safetensors" in str(caught.value)
    assert snapshot_module_state(unet) == before  # checked before anything was copied


def test_missing_keys_allowed_when_not_strict(tmp_path):
    file = tmp_path / "partial.safetensors"
    donor = build_tiny_components(1)["unet"].state_dict()
    save_file(_drop(donor, "conv_in.weight"), str(file))
    unet = load_unet_state_dict(build_tiny_components(0)["unet"], file, strict=False)
    torch.testing.assert_close(unet.conv_out.weight, donor["conv_out.weight"], rtol=0, atol=0)


def test_diffusers_names_under_the_ldm_prefix_are_named_as_unknown(tmp_path):
    """Real ldm files load (tests/test_checkpoint_formats.py); diffusers names behind ldm's prefix match nothing."""
    file = tmp_path / "sd-v1-4.ckpt"
    state = {"model.diffusion_model." + k: v for k, v in build_tiny_components(0)["unet"].state_dict().items()}
    save_torch({"state_dict": state}, file)
    with pytest.raises(StateDictMismatchError, match="looks like an ldm") as caught:
        load_model(make_pipe(0), unet_weights=file)
    assert "model.diffusion_model.conv_in.bias" in str(caught.value) and "sd-v1-4.ckpt" in str(caught.value)


BAD_FILES = [  # (file name, content, error, text the message must hold)
    ("corrupt.safetensors", b"not a safetensors file at all", ModelError, "corrupt.safetensors"),
    ("corrupt.pt", b"\x80\x04garbage", ModelError, "corrupt.pt"),
    ("weights.npz", b"", InputError, "suffix"),
]


@pytest.mark.parametrize("name, content, error, text", BAD_FILES, ids=[row[0] for row in BAD_FILES])
def test_unreadable_weight_files_raise(name, content, error, text, tmp_path):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(error, match=text):
        load_model(make_pipe(0), unet_weights=tmp_path / name)


def test_missing_weight_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="absent.safetensors"):
        load_model(make_pipe(0), unet_weights=tmp_path / "absent.safetensors")


# ---------------------------------------------------------------------------------------- text encoder
def test_text_encoder_folder_replaces_the_encoder(tmp_path, pipe_folder):
    erased_encoder = build_tiny_components(7)["text_encoder"]
    erased_encoder.save_pretrained(tmp_path / "te")
    base = load_model(pipe_folder)

    model = load_model(pipe_folder, text_encoder=tmp_path / "te")

    reference = DiffusionModel.from_components(**{**build_tiny_components(0), "text_encoder": erased_encoder})
    torch.testing.assert_close(model.encode_prompts([PROMPT]), reference.encode_prompts([PROMPT]), **SAME)
    assert not torch.allclose(model.encode_prompts([PROMPT]), base.encode_prompts([PROMPT]), atol=OTHER_ATOL)


def test_text_encoder_follows_like_dtype(tmp_path):
    build_tiny_components(7)["text_encoder"].save_pretrained(tmp_path / "te")
    like = build_tiny_components(0)["text_encoder"].to(torch.float64)
    assert load_text_encoder(tmp_path / "te", like=like).dtype == torch.float64


def _te_other_width(folder: Path) -> None:
    build_tiny_components(0, TinyModelSpec(text_hidden=48))["text_encoder"].save_pretrained(folder)


TEXT_ENCODER_ERRORS = [  # (set up the folder, error, text)
    (lambda folder: None, InputError, "does not exist"),
    (lambda folder: folder.mkdir(), InputError, "no config.json"),
    (_te_other_width, ModelError, "cross_attention_dim=32"),
]


@pytest.mark.parametrize("setup, error, text", TEXT_ENCODER_ERRORS, ids=["missing", "no_config", "other_width"])
def test_bad_text_encoder_folders_raise(setup, error, text, tmp_path):
    folder = tmp_path / "te"
    setup(folder)
    with pytest.raises(error, match=text):
        load_model(make_pipe(0), text_encoder=folder)


# ---------------------------------------------------------------------------------------- LoRA
LORA_PATHS = [  # (format, path given to load_model, relative to the adapter folder)
    ("diffusers", "."),
    ("diffusers", "pytorch_lora_weights.safetensors"),  # the file itself
    ("peft", "."),
]


@pytest.mark.parametrize("fmt, given", LORA_PATHS, ids=["diffusers_folder", "diffusers_file", "peft_folder"])
def test_lora_adapter_matches_the_unet_that_saved_it(fmt, given, tmp_path, pipe_folder, base_eps):
    trained_unet = save_lora(tmp_path / "lora", fmt)

    model = load_model(pipe_folder, lora=tmp_path / "lora" / given)

    torch.testing.assert_close(eps(model), eps(with_unet(trained_unet)), **SAME)
    assert not torch.allclose(eps(model), base_eps, atol=OTHER_ATOL)


def _rename_some_layers(folder: Path) -> None:
    """A diffusers LoRA whose down_blocks.0 layers do not exist here: diffusers only warns."""
    save_lora(folder, "diffusers")
    file = folder / "pytorch_lora_weights.safetensors"
    state = {k.replace("down_blocks.0.", "down_blocks.9."): v for k, v in load_file(str(file)).items()}
    save_file(state, str(file))


def _text_encoder_adapter(folder: Path) -> None:
    """A peft adapter for the text encoder passed as the UNet's adapter."""
    encoder = build_tiny_components(0)["text_encoder"]
    get_peft_model(encoder, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(folder)


MISMATCHED_LORAS = {
    "diffusers_other_channels": lambda folder: save_lora(folder, "diffusers", OTHER_CHANNELS),
    "peft_other_channels": lambda folder: save_lora(folder, "peft", OTHER_CHANNELS),
    "diffusers_absent_layers": _rename_some_layers,
    "peft_text_encoder_adapter": _text_encoder_adapter,
}


@pytest.mark.parametrize("kind", MISMATCHED_LORAS)
def test_lora_for_another_model_raises(kind, tmp_path):
    MISMATCHED_LORAS[kind](tmp_path / "lora")
    pipe = make_pipe(0)
    before = snapshot_module_state(pipe.unet)
    with pytest.raises(ModelError, match="does not match"):
        load_model(pipe, lora=tmp_path / "lora")
    assert snapshot_module_state(pipe.unet) == before


def test_folder_without_adapter_files_is_an_input_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="adapter_config.json"):
        load_model(make_pipe(0), lora=tmp_path / "empty")


# ---------------------------------------------------------------------------------------- in training
def _inject(unet):
    unet.add_adapter(lora_config())
    return unet


IN_TRAINING = {"add_adapter": _inject, "get_peft_model": lambda unet: get_peft_model(unet, lora_config())}


@pytest.mark.parametrize("lora_b", ["zero", "random"])
@pytest.mark.parametrize("wrap", IN_TRAINING)
def test_in_training_unet_predicts_with_the_adapter_active(wrap, lora_b, base_eps):
    unet = IN_TRAINING[wrap](build_tiny_components(0)["unet"])
    if lora_b == "random":
        randomize_lora_b_(unet)

    prediction = eps(with_unet(unet))

    if lora_b == "zero":
        torch.testing.assert_close(prediction, base_eps, rtol=0, atol=0)
    else:
        assert not torch.allclose(prediction, base_eps, atol=OTHER_ATOL)


# ---------------------------------------------------------------------------------------- module state
def mixed_state_modules() -> tuple[torch.nn.Module, torch.nn.Module]:
    """A UNet in training with some blocks in eval and some frozen params, beside a frozen encoder."""
    parts = build_tiny_components(0)
    unet, encoder = parts["unet"].train(), parts["text_encoder"].eval()
    unet.down_blocks[0].eval()
    unet.conv_in.weight.requires_grad_(False)
    encoder.requires_grad_(False)
    encoder.get_input_embeddings().weight.requires_grad_(True)
    return unet, encoder


def _body_returns(unet, encoder):
    unet.train()  # a careless body: state is restored anyway
    unet.conv_out.weight.requires_grad_(False)


def _body_raises(unet, encoder):
    _body_returns(unet, encoder)
    raise RuntimeError("probe failed")


@pytest.mark.parametrize("body, raises", [(_body_returns, None), (_body_raises, RuntimeError)], ids=["returns", "raises"])
def test_preserve_module_state_restores_exact_flags(body, raises):
    unet, encoder = mixed_state_modules()
    before = snapshot_module_state(unet, encoder)

    def run():
        with preserve_module_state(unet, encoder):
            assert not any(m.training for root in (unet, encoder) for m in root.modules())
            body(unet, encoder)

    if raises:
        with pytest.raises(raises):
            run()
    else:
        run()
    after = snapshot_module_state(unet, encoder)
    assert after == before, before.differences(after)


def _nudge_one_weight(unet):
    with torch.no_grad():
        flat = unet.mid_block.resnets[0].conv1.weight.view(-1)
        flat[7] = torch.nextafter(flat[7], torch.tensor(float("inf")))  # one ulp


def _flip_requires_grad(unet):
    unet.time_embedding.linear_1.bias.requires_grad_(False)


def _flip_training(unet):
    unet.conv_out.train()


SNAPSHOT_CHANGES = {
    "one_weight_one_ulp": (_nudge_one_weight, "tensors: 0.mid_block.resnets.0.conv1.weight"),
    "requires_grad": (_flip_requires_grad, "requires_grad: 0.time_embedding.linear_1.bias"),
    "training": (_flip_training, "training: 0.conv_out"),
}


@pytest.mark.parametrize("kind", SNAPSHOT_CHANGES)
def test_snapshot_detects_a_single_change(kind):
    unet = build_tiny_components(0)["unet"]
    before = snapshot_module_state(unet)
    assert snapshot_module_state(unet) == before
    change, difference = SNAPSHOT_CHANGES[kind]

    change(unet)

    after = snapshot_module_state(unet)
    assert after != before
    assert before.differences(after) == [difference]
