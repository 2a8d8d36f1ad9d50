"""The attention CNN: a convolutional feature extractor, soft attention pooling, a linear classifier.

For the feature map F = {f_1..f_n} (n = H·W): e_i = wᵀ tanh(W_f f_i + b_f), α = softmax(e) over all
n positions, v = Σ α_i f_i, logits = linear(v). α is returned as an H×W attention map.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from pipeline.config import ModelConfig


class Prediction(NamedTuple):
    logits: torch.Tensor  # B×classes
    attention: torch.Tensor  # B×H×W, each map sums to 1


class SoftAttentionPool(nn.Module):
    """Soft attention over all H·W positions of a feature map."""

    def __init__(self, channels: int, attention_dim: int):
        super().__init__()
        self.project = nn.Linear(channels, attention_dim)  # W_f, b_f
        self.score = nn.Linear(attention_dim, 1, bias=False)  # w

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, _, height, width = features.shape
        positions = features.flatten(2).transpose(1, 2)  # B×n×C
        scores = self.score(torch.tanh(self.project(positions))).squeeze(-1)  # B×n
        alpha = torch.softmax(scores.float(), dim=1)
        pooled = torch.bmm(alpha.unsqueeze(1).to(positions.dtype), positions).squeeze(1)  # B×C
        return pooled, alpha.view(batch, height, width)


class AveragePool(nn.Module):
    """Global average pooling: the ablation baseline, equivalent to uniform attention."""

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, _, height, width = features.shape
        uniform = features.new_full((batch, height, width), 1.0 / (height * width), dtype=torch.float32)
        return features.mean(dim=(2, 3)), uniform


def seed_cnn(in_channels: int, widths: list[int], convs_per_block: int = 1) -> nn.Sequential:
    """One block per width: `convs_per_block` conv–BN–ReLU layers, the last one max-pooled.

    Max-pooling and ReLU commute (ReLU is monotonic), so the last layer pools before its ReLU:
    the same function as conv–BN–ReLU–maxpool, with ReLU touching a quarter of the values.
    """
    layers: list[nn.Module] = []
    for width in widths:
        for index in range(convs_per_block):
            layers += [nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)]
            if index == convs_per_block - 1:
                layers.append(nn.MaxPool2d(2))
            layers.append(nn.ReLU(inplace=True))
            in_channels = width
    return nn.Sequential(*layers)


def resnet18_features(in_channels: int) -> tuple[nn.Sequential, int]:
    """torchvision's ResNet-18 (random init), its stem adapted to small images: 3×3 stride-1, no maxpool."""
    import torchvision  # only this backbone needs it, and importing it costs seconds

    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    body = nn.Sequential(net.conv1, net.bn1, net.relu, net.layer1, net.layer2, net.layer3, net.layer4)
    return body, 512


class AttentionCNN(nn.Module):
    """Normalisation → feature extractor → attention (or average) pooling → dropout → linear classifier.

    Takes images as stored (uint8, or floats in 0..255), N×C×H×W; normalises with the training
    split's per-channel `mean` and `std` (in 0..1 units), which are saved with the weights.
    """

    def __init__(
        self, cfg: ModelConfig, in_channels: int, num_classes: int,
        mean: list[float] | None = None, std: list[float] | None = None,
    ):  # fmt: skip
        super().__init__()
        mean = torch.tensor(mean or [0.5] * in_channels).view(1, -1, 1, 1) * 255
        std = torch.tensor(std or [0.5] * in_channels).view(1, -1, 1, 1) * 255
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        if cfg.backbone == "seed_cnn":
            self.features, channels = seed_cnn(in_channels, cfg.widths, cfg.convs_per_block), cfg.widths[-1]
        else:
            self.features, channels = resnet18_features(in_channels)
        self.pool = SoftAttentionPool(channels, cfg.attention_dim) if cfg.attention == "soft" else AveragePool()
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, images: torch.Tensor) -> Prediction:
        normalised = (images.float() - self.mean) / self.std
        pooled, attention = self.pool(self.features(normalised))
        return Prediction(self.classifier(self.dropout(pooled)), attention)
