"""A small CNN that tells which shape a 32x32 picture shows: the small world's concept detector.

It plays the role ResNet-50 or NudeNet play for real Stable Diffusion: scoring whether
generated images show a concept. Trained on rendered scenes with their known labels.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .shapes import SHAPES


class ShapeClassifier(nn.Module):
    """(B, 3, 32, 32) images in [0, 1] -> (B, len(SHAPES)) logits."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),  # 16x16
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),  # 8x8
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),  # 4x4
        )
        self.head = nn.Linear(2 * width * 16, len(SHAPES))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images * 2 - 1).flatten(1))

    @torch.no_grad()
    def _eval_logits(self, images: torch.Tensor) -> torch.Tensor:
        was_training = self.training
        self.eval()
        logits = self(images.float())
        self.train(was_training)
        return logits

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Shape indices (B,) for images in [0, 1]."""
        return self._eval_logits(images).argmax(dim=1)

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax over the shapes (B, len(SHAPES)) for images in [0, 1]."""
        return self._eval_logits(images).softmax(dim=1)


def concept_accuracy(classifier: ShapeClassifier, images: torch.Tensor, shape: str) -> float:
    """Fraction of images (B, 3, 32, 32) in [0, 1] classified as `shape`."""
    return float((classifier.predict(images) == SHAPES.index(shape)).float().mean())


def train_classifier(
    images: torch.Tensor, labels: torch.Tensor, steps: int, seed: int, batch_size: int = 128
) -> tuple[ShapeClassifier, list[float]]:
    """Fit on uint8 images (N, 3, 32, 32) with shape labels (N,); returns the model and its losses."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ShapeClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    losses = []
    for _ in range(steps):
        index = torch.randint(0, len(images), (batch_size,), generator=generator)
        loss = F.cross_entropy(model(images[index].float() / 255), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model.eval(), losses
