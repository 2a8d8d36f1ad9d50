"""Grad-CAM on the model's last feature map, computed by the `grad-cam` library: the baseline that the
attention's localisation and deletion figures are compared with.

Grad-CAM weighs the feature map (the one attention pools) by the answered class's gradients; the
library returns it upsampled to the image and scaled to 0..1. Here it is averaged back onto the
attention grid and normalised to sum to 1, so both maps are scored by the same code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.model.network import AttentionCNN


class _Logits(nn.Module):
    """The model with the logits as its only output, as the library expects."""

    def __init__(self, model: AttentionCNN):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images).logits


def gradcam_maps(
    model: AttentionCNN, images: torch.Tensor, grid: tuple[int, int], batch_size: int,
    classes: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """N×h×w Grad-CAM maps of each image's class in `classes` (N; None: its most probable) on the
    attention grid, each summing to 1 (uniform where Grad-CAM is zero everywhere). `images` are
    uint8 N×C×H×W."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    device = next(model.parameters()).device
    maps = []
    with GradCAM(model=_Logits(model), target_layers=[model.features]) as cam:
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].to(device).float()
            chosen = None if classes is None else classes[start : start + batch_size]
            targets = None if chosen is None else [ClassifierOutputTarget(int(c)) for c in chosen]
            heat = torch.from_numpy(cam(input_tensor=batch, targets=targets)).float()  # N×H×W in 0..1
            maps.append(F.adaptive_avg_pool2d(heat[:, None], grid)[:, 0])
    model.eval()
    stacked = torch.cat(maps) if maps else torch.empty(0, *grid)
    total = stacked.flatten(1).sum(1).view(-1, 1, 1)
    uniform = torch.full_like(stacked, 1 / (grid[0] * grid[1]))
    return torch.where(total > 0, stacked / total.clamp(min=1e-12), uniform)
