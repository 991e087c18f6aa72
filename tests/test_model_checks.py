"""What `probe` checks on the model before any compute, and what the loaders check on weight files.

- NaN/Inf in the weights (a diverged LoRA) is the weights' fault: named by tensor (and by file
  when one was read) before any inversion, never blamed on the images.
- Pickled weights holding objects other than tensors are refused in one line, never unpickled.
- Prompts longer than the tokenizer's limit are cut by the text encoder: one warning says how many.
"""

from __future__ import annotations

import math
import os
import sys
import warnings

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file

from unlearn_guard import probe
from unlearn_guard.errors import ModelError, NonFiniteWeightsError
from unlearn_guard.models import DiffusionModel, load_model, read_state_dict
from unlearn_guard.models.checks import check_finite_weights, non_finite_tensors, token_counts
from unlearn_guard.models.tiny import build_tiny_components

PROBE_MODULE = sys.modules["unlearn_guard.probe"]  # the module (`unlearn_guard.probe` is the function)


def _never_invert(*args, **kwargs):
    raise AssertionError("an inversion ran although the weights hold NaN")


def _in_training_model(wrap: str) -> tuple[DiffusionModel, torch.nn.Module]:
    """The tiny model with a LoRA injected into its UNet the way a training loop does (no file)."""
    parts = build_tiny_components(0)
    config = LoraConfig(r=4, lora_alpha=4, target_modules=["to_k", "to_q"])
    if wrap == "add_adapter":
        parts["unet"].add_adapter(config)
    else:
        parts["unet"] = get_peft_model(parts["unet"], config)
    return DiffusionModel.from_components(**parts), parts["unet"]


# --------------------------------------------------------------------------- non-finite weights
def test_non_finite_tensors_names_nan_and_inf_in_order_and_skips_integers():
    named = [("a", torch.ones(3)), ("b", torch.tensor([1.0, math.nan])), ("ints", torch.arange(3)),
             ("c", torch.tensor([math.inf], dtype=torch.bfloat16)), ("d", torch.zeros(2, 2)),
             ("e", torch.tensor([-math.inf, 0.0], dtype=torch.float16))]
    assert non_finite_tensors(named) == ["b", "c", "e"]
    assert non_finite_tensors([("a", torch.ones(2)), ("i", torch.arange(2))]) == []  # negative control


@pytest.mark.parametrize("wrap", ["add_adapter", "get_peft_model"])
def test_nan_lora_of_a_unet_in_training_is_named_before_any_inversion(wrap, tiny_images, monkeypatch):
    model, unet = _in_training_model(wrap)
    name = next(n for n, _ in unet.named_parameters() if "lora_B" in n)
    with torch.no_grad():
        dict(unet.named_parameters())[name].fill_(math.nan)
    monkeypatch.setattr(PROBE_MODULE, "renoise_invert", _never_invert)
    with pytest.raises(NonFiniteWeightsError) as caught:
        probe(model, tiny_images, "a cat", reference=tiny_images, reference_prompts="a dog", config="fast",
              progress=False)
    message = str(caught.value)
    assert f"'unet.{name}'" in message and "1 tensor(s)" in message and "not the images" in message, message
    assert "image" not in message.replace("not the images", ""), message  # no image is blamed


def test_the_training_monitor_records_the_nan_parameter_by_name(tiny_images, monkeypatch):
    """The callback path: a probe during training fails on the weights, named, and training goes on."""
    from unlearn_guard.callbacks import MonitorConfig, ProbeMonitor, ProbeWarning

    model, unet = _in_training_model("add_adapter")
    name = next(n for n, _ in unet.named_parameters() if "lora_A" in n)
    monitor = ProbeMonitor(model, tiny_images, "a cat", reference=tiny_images, reference_prompts="a dog",
                           config=MonitorConfig(every_n_steps=1, probe="fast"))
    with torch.no_grad():
        dict(unet.named_parameters())[name][0, 0] = math.inf
    monkeypatch.setattr(PROBE_MODULE, "renoise_invert", _never_invert)
    with pytest.warns(ProbeWarning):
        record = monitor.probe_now(1)
    assert record.error.startswith("NonFiniteWeightsError") and f"'unet.{name}'" in record.error, record.error


def test_inf_in_the_vae_or_text_encoder_is_named_too():
    model = DiffusionModel.from_components(**build_tiny_components(0))  # fresh: the fixture's weights are shared
    with torch.no_grad():
        model.vae.decoder.conv_out.bias[0] = math.inf
        model.text_encoder.get_input_embeddings().weight[3, 1] = -math.inf
    with pytest.raises(NonFiniteWeightsError) as caught:
        check_finite_weights(model)
    message = str(caught.value)
    assert "'vae.decoder.conv_out.bias'" in message and "2 tensor(s)" in message
    assert "embeddings.token_embedding.weight'" in message and "'text_encoder." in message


def test_finite_weights_pass_and_cost_one_host_sync(tiny_model, monkeypatch):
    calls = []
    real_tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: calls.append(1) or real_tolist(self))
    monkeypatch.setattr(torch.Tensor, "item", lambda self: pytest.fail("a per-tensor host sync"))
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda self: pytest.fail("a per-tensor host sync"))
    check_finite_weights(tiny_model)  # no error
    assert calls == [1]
    parameters = sum(1 for m in tiny_model.modules() for _ in m.parameters())
    assert parameters > 50  # one sync for all of them, not one each


def test_nan_in_a_weights_file_names_the_file_and_the_tensor(tmp_path):
    unet = build_tiny_components(0)["unet"]
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    state["conv_in.bias"][2] = math.nan
    save_file(state, str(tmp_path / "erased.safetensors"))
    with pytest.raises(NonFiniteWeightsError) as caught:
        read_state_dict(tmp_path / "erased.safetensors", "unet_weights")
    message = str(caught.value)
    assert "erased.safetensors" in message and "'conv_in.bias'" in message and f"1 of {len(state)}" in message
    state["conv_in.bias"][2] = 0.0  # negative control: the same file, finite, loads
    save_file(state, str(tmp_path / "erased.safetensors"))
    assert len(read_state_dict(tmp_path / "erased.safetensors", "unet_weights")) == len(state)


def test_nan_in_a_text_encoder_folder_names_the_folder(tmp_path):
    parts = build_tiny_components(0)
    encoder = parts["text_encoder"]
    name, weight = next((n, p) for n, p in encoder.named_parameters() if "final_layer_norm.weight" in n)
    with torch.no_grad():
        weight[0] = math.nan
    encoder.save_pretrained(tmp_path / "encoder")
    with pytest.raises(NonFiniteWeightsError) as caught:
        load_model(DiffusionModel.from_components(**build_tiny_components(0)), text_encoder=tmp_path / "encoder")
    assert f"'{tmp_path / 'encoder'}'" in str(caught.value) and f"'{name}'" in str(caught.value)


# --------------------------------------------------------------------------- pickled weights
class _Payload:
    """Unpickling this runs code: it would create the file named in `marker`."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mknod, (self.marker,))


@pytest.mark.parametrize("wrapped", [False, True])
def test_pickled_objects_are_refused_in_one_line_and_never_run(tmp_path, wrapped):
    marker = tmp_path / "payload_ran"
    state = {"conv_in.weight": torch.zeros(2), "extra": _Payload(str(marker))}
    torch.save({"state_dict": state, "epoch": 3} if wrapped else state, tmp_path / "erased.ckpt")
    with pytest.raises(ModelError) as caught:
        read_state_dict(tmp_path / "erased.ckpt", "unet_weights")
    message = str(caught.value)
    assert not marker.exists(), "the pickle's payload ran"
    # one line, no colour codes, short: torch's own text is ~1,100 characters (the path appears 3 times)
    assert "\n" not in message and "\x1b" not in message and len(message) - 3 * len(str(tmp_path)) < 500, message
    assert "erased.ckpt" in message and "other than tensors" in message and "not loaded" in message
    assert "references posix.mknod" in message and "safetensors" in message and "erased.safetensors" in message
    assert "PyTorch 2.6" not in message  # torch's own paragraph is gone


def test_a_damaged_pickle_is_one_line_too(tmp_path):
    (tmp_path / "damaged.pt").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ModelError) as caught:
        read_state_dict(tmp_path / "damaged.pt", "unet_weights")
    message = str(caught.value)
    assert "damaged.pt" in message and "\n" not in message and len(message) < 400, message
    assert "other than tensors" not in message  # damaged, not unsafe


# --------------------------------------------------------------------------- long prompts
def test_long_prompts_warn_once_with_their_count_and_the_limit(tiny_model, tiny_images):
    limit = tiny_model.tokenizer.model_max_length  # 16 for the tiny char-level tokenizer
    long_prompt = "x" * 5000
    prompts = ["a cat", long_prompt, "a dog", long_prompt]
    counts = token_counts(tiny_model.tokenizer, prompts)
    assert counts[0] == counts[2] <= limit < 5000 < counts[1] == counts[3]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probe(tiny_model, tiny_images, prompts, reference=tiny_images, reference_prompts=[long_prompt] + ["a"] * 3,
              config="fast", progress=False, bootstrap_samples=0)
    cut = [w for w in caught if "longer than the tokenizer's limit" in str(w.message)]
    assert len(cut) == 1, [str(w.message) for w in caught]
    message = str(cut[0].message)
    assert f"3 of 8 prompts are longer than the tokenizer's limit of {limit} tokens" in message, message
    assert f"images image[1] ({counts[1]} tokens)" in message and "reference image[0]" in message
    assert cut[0].filename == __file__  # attributed to the caller of probe()


def test_prompts_within_the_limit_do_not_warn(tiny_model, tiny_images):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' own deprecations
        probe(tiny_model, tiny_images, "a cat", config="fast", progress=False)
