"""DiffusionModel: consistency checks between parts and wrapper unwrapping."""

from __future__ import annotations

import pytest
import torch

from unlearn_guard.errors import ModelError
from unlearn_guard.models import DiffusionModel, unwrap_unet
from unlearn_guard.models.tiny import build_tiny_components


@pytest.mark.parametrize(
    "unet,text_encoder,vae,ok",
    [
        (torch.float32, torch.float32, torch.float32, True),
        (torch.bfloat16, torch.bfloat16, torch.float32, True),  # upcast VAE: deliberate and common
        (torch.bfloat16, torch.bfloat16, torch.bfloat16, True),
        (torch.float32, torch.float32, torch.float64, False),
        (torch.bfloat16, torch.float32, torch.bfloat16, False),
        (torch.float16, torch.float16, torch.bfloat16, False),
    ],
)
def test_dtype_combinations(unet, text_encoder, vae, ok):
    parts = build_tiny_components(seed=0)
    parts["unet"].to(unet)
    parts["text_encoder"].to(text_encoder)
    parts["vae"].to(vae)
    if ok:
        model = DiffusionModel.from_components(**parts)
        assert model.dtype == unet
    else:
        with pytest.raises(ModelError, match="different dtypes"):
            DiffusionModel.from_components(**parts)


def test_missing_scheduler_is_refused():
    parts = build_tiny_components(seed=0)
    parts.pop("scheduler")
    with pytest.raises(ModelError, match="scheduler"):
        DiffusionModel.from_components(**parts)


def test_compiled_and_wrapped_unets_are_unwrapped():
    parts = build_tiny_components(seed=0)
    base = parts["unet"]
    compiled = torch.compile(base)  # lazy: nothing is compiled until the first call
    assert unwrap_unet(compiled) is base

    class Wrapper(torch.nn.Module):  # the accelerate / DDP shape: the model under `.module`
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert unwrap_unet(Wrapper(compiled)) is base
    parts["unet"] = compiled
    assert DiffusionModel.from_components(**parts).resolution == 64


def test_bf16_unet_prediction_is_float32_and_close_to_fp32(tiny_images):
    parts = build_tiny_components(seed=0)
    model = DiffusionModel.from_components(**parts)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    c = model.encode_prompts(["a", "b"])
    reference = model.predict_noise(z, 101, c)
    model.unet.to(torch.bfloat16)
    model.text_encoder.to(torch.bfloat16)
    low = model.predict_noise(z, 101, c)  # fp32 embeddings are cast to the UNet's dtype
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, reference, rtol=5e-2, atol=5e-2)


def test_parts_on_different_devices_are_refused():
    parts = build_tiny_components(seed=0)
    parts["vae"].to("meta")  # a second device without a GPU: the check must name both
    with pytest.raises(ModelError, match=r"different devices: unet=cpu, vae=meta"):
        DiffusionModel.from_components(**parts)
