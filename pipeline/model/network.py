"""The attention CNN: a convolutional feature extractor, soft attention pooling, a linear classifier.

For the feature map F = {f_1..f_n} (n = H·W): e_i = wᵀ tanh(W_f f_i + b_f), α = softmax(e) over all
n positions, v = Σ α_i f_i, logits = linear(v) (variants: several heads, a gate: `SoftAttentionPool`).
α is returned as an H×W attention map, v as the image's embedding and, once the model has a
detector (`pipeline/model/novelty.py`), the novelty score (from the feature map's mean over all
positions: the whole image, not only the attended region).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from pipeline.core.config import ModelConfig
from pipeline.model.backbones import IMAGENET_MEAN, IMAGENET_STD, build_backbone
from pipeline.model.novelty import DETECTOR, MEAN_FEATURES, READS, NearestNeighbours


class Prediction(NamedTuple):
    logits: torch.Tensor  # B×classes
    attention: torch.Tensor  # B×H×W, each map sums to 1
    embedding: torch.Tensor  # B×C, the pooled features v
    novelty: torch.Tensor | None = None  # B, the out-of-distribution score (None: no detector)


class SoftAttentionPool(nn.Module):
    """Soft attention over all H·W positions of a feature map.

    `heads` score vectors w_k give `heads` maps α_k, each pooling its own v_k; the pooled vector is
    their concatenation (heads × C) and the map shown is their mean (still summing to 1). `gated`
    scores e_i = wᵀ(tanh(W_f f_i + b_f) ⊙ sigmoid(W_g f_i + b_g)) (Ilse et al., 2018): a gate in
    0..1 that can turn a position down whatever its tanh response.
    """

    def __init__(self, channels: int, attention_dim: int, heads: int = 1, gated: bool = False):
        super().__init__()
        self.project = nn.Linear(channels, attention_dim)  # W_f, b_f
        self.score = nn.Linear(attention_dim, heads, bias=False)  # w (one row per head)
        self.gate = nn.Linear(channels, attention_dim) if gated else None  # W_g, b_g

    def weights(self, positions: torch.Tensor) -> torch.Tensor:
        """B×n×heads: each head's softmax over all n positions of B×n×C `positions`."""
        hidden = torch.tanh(self.project(positions))
        if self.gate is not None:
            hidden = hidden * torch.sigmoid(self.gate(positions))
        return torch.softmax(self.score(hidden).float(), dim=1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, _, height, width = features.shape
        positions = features.flatten(2).transpose(1, 2)  # B×n×C
        alpha = self.weights(positions)
        pooled = torch.bmm(alpha.transpose(1, 2).to(positions.dtype), positions)  # B×heads×C
        return pooled.flatten(1), alpha.mean(dim=2).view(batch, height, width)

    def head_maps(self, features: torch.Tensor) -> torch.Tensor:
        """B×heads×H×W: each head's own map (the map `forward` returns is their mean)."""
        batch, _, height, width = features.shape
        return self.weights(features.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(batch, -1, height, width)


class AveragePool(nn.Module):
    """Global average pooling: the ablation baseline, equivalent to uniform attention."""

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, _, height, width = features.shape
        uniform = features.new_full((batch, height, width), 1.0 / (height * width), dtype=torch.float32)
        return features.mean(dim=(2, 3)), uniform


class AttentionCNN(nn.Module):
    """Normalisation → feature extractor → attention (or average) pooling → dropout → linear classifier.

    Takes images as stored (uint8, or floats in 0..255), N×C×H×W; normalises with the training
    split's per-channel `mean` and `std` (in 0..1 units), which are saved with the weights. An
    ImageNet backbone (`model.pretrained`) sees RGB (a gray channel repeated) in ImageNet's
    normalisation instead; `pretrained=True` also loads its ImageNet weights (training does; a
    saved model is rebuilt without them and then loads its own).
    """

    def __init__(
        self, cfg: ModelConfig, in_channels: int, num_classes: int,
        mean: list[float] | None = None, std: list[float] | None = None, pretrained: bool = False,
    ):  # fmt: skip
        super().__init__()
        self.gray_to_rgb = cfg.pretrained and in_channels == 1
        if cfg.pretrained:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        mean = torch.tensor(mean or [0.5] * in_channels).view(1, -1, 1, 1) * 255
        std = torch.tensor(std or [0.5] * in_channels).view(1, -1, 1, 1) * 255
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.features, channels = build_backbone(cfg, in_channels, pretrained)
        self.feature_channels = channels
        self.features_frozen = False  # fine-tuning: train the head alone (train.freeze_epochs)
        if cfg.attention == "none":
            self.pool, pooled = AveragePool(), channels
        else:
            gated = cfg.attention == "gated"
            self.pool = SoftAttentionPool(channels, cfg.attention_dim, cfg.attention_heads, gated)
            pooled = channels * cfg.attention_heads
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(pooled, num_classes)
        # calibration (pipeline/model/calibration.py): 1 and 0 while training, fitted after
        self.register_buffer("temperature", torch.ones(()), persistent=False)
        self.register_buffer("offset", torch.zeros(num_classes), persistent=False)  # the class weights' pull out
        self.novelty: NearestNeighbours | None = None  # the "unknown" detector, fitted after training
        self.folded = False  # batch norms folded into the convolutions: for scoring only (`fold_batch_norms`)

    def attach_novelty(self, size: int, neighbours: int, detector: str = DETECTOR) -> NearestNeighbours:
        """Give the model a detector (`novelty.READS`) with an empty bank of `size` feature vectors
        (filled by training or by loading a model file)."""
        reads = READS[detector]
        channels = self.feature_channels if reads == MEAN_FEATURES else self.classifier.in_features
        self.novelty = NearestNeighbours(size, channels, neighbours, reads).to(self.mean.device)
        return self.novelty

    def freeze_features(self, frozen: bool) -> None:
        """Freeze the feature extractor (no gradients, batch-norm statistics fixed) or release it."""
        self.features_frozen = frozen
        if frozen:
            self.features.eval()

    def fold_batch_norms(self) -> AttentionCNN:
        """For scoring only: each batch norm that follows a convolution in a sequence of layers is
        folded into that convolution's weights and bias (with its running statistics, as in eval
        mode) and becomes an identity: the same function, one pass over the activations fewer
        (seed CNN at 128 px: scoring about 10 % faster). Not for training, nor for saving: its
        weights no longer fit the architecture's. Returns the model."""
        for sequence in [module for module in self.modules() if isinstance(module, nn.Sequential)]:
            for index in range(len(sequence) - 1):
                conv, norm = sequence[index], sequence[index + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats:
                    sequence[index], sequence[index + 1] = fuse_conv_bn_eval(conv.eval(), norm.eval()), nn.Identity()
        self.folded = True
        return self

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """The feature extractor's B×C×H×W output for uint8 (or 0..255 float) images."""
        if self.gray_to_rgb:
            images = images.expand(-1, 3, -1, -1)
        normalised = (images.float() - self.mean) / self.std
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.features_frozen):
            return self.features(normalised)

    @staticmethod
    def _spatial_mean(features: torch.Tensor) -> torch.Tensor:
        """B×C: a feature map averaged over all positions, in float32 (what the "unknown" detector reads)."""
        return features.float().mean(dim=(2, 3))

    def mean_features(self, images: torch.Tensor) -> torch.Tensor:
        """B×C: each image's last feature map averaged over all positions, in float32."""
        return self._spatial_mean(self.feature_map(images))

    def head_maps(self, images: torch.Tensor) -> torch.Tensor | None:
        """B×heads×H×W: each attention head's map for the images; None unless the model has several."""
        if not isinstance(self.pool, SoftAttentionPool) or self.pool.score.out_features < 2:
            return None
        return self.pool.head_maps(self.feature_map(images))

    def forward(self, images: torch.Tensor) -> Prediction:
        features = self.feature_map(images)
        pooled, attention = self.pool(features)
        logits = self.classifier(self.dropout(pooled)) / self.temperature + self.offset
        novelty = None
        if self.novelty is not None:
            novelty = self.novelty(self._spatial_mean(features) if self.novelty.reads == MEAN_FEATURES else pooled)
        return Prediction(logits, attention, pooled, novelty)
