"""The CLIP score of generations (Hessel et al., 2021), computed by torchmetrics.

`clip_score` from `torchmetrics.functional.multimodal` is 100 * cos(image features, text
features), averaged over the images and clamped at 0. It loads a CLIP model by hub id; here the
model is loaded once (hub id or a local folder holding `CLIPModel` and `CLIPProcessor` files) and
handed to torchmetrics as its "callable returning (model, processor)".
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ModelError


class ProjectedFeatures(torch.nn.Module):
    """A `CLIPModel` whose `get_image_features` / `get_text_features` return the projected tensors.

    transformers 5 returns a `BaseModelOutputWithPooling` (the projection in `pooler_output`) where 4
    returned the tensor, and torchmetrics 1.9 normalises what it gets (Lightning-AI/torchmetrics
    issues #3407, #3428): unwrapping here works with both.
    """

    def __init__(self, clip: torch.nn.Module) -> None:
        super().__init__()
        self.clip = clip
        self.config = clip.config  # torchmetrics reads text_config.max_position_embeddings

    @staticmethod
    def _tensor(output: Any) -> torch.Tensor:
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._tensor(self.clip.get_image_features(pixel_values=pixel_values))

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self._tensor(self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask))


def load_clip(name_or_path: str) -> tuple[ProjectedFeatures, Any]:
    """(model, processor) for `clip_score`, from a hub id or a local folder; ModelError when it cannot load."""
    from transformers import CLIPModel, CLIPProcessor

    try:
        model = CLIPModel.from_pretrained(name_or_path).eval()
        processor = CLIPProcessor.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise ModelError(f"clip_model {name_or_path!r}: cannot load a CLIPModel and CLIPProcessor "
                         f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); expected "
                         "a hub id reachable from this machine or a local folder with both saved "
                         "(save_pretrained)") from None
    return ProjectedFeatures(model), processor


@torch.no_grad()
def clip_score_of(images: torch.Tensor, prompt: str, clip: tuple[ProjectedFeatures, Any]) -> float:
    """torchmetrics' CLIP score of images (N, 3, H, W) in [0, 1] against `prompt` (mean over images).

    The images go in as uint8 (0-255): CLIP's processor rescales by 1/255 itself."""
    from torchmetrics.functional.multimodal import clip_score

    pixels = (images.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return float(clip_score(pixels, [prompt] * len(pixels), model_name_or_path=lambda: clip))
