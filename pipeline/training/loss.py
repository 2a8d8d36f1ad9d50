"""The training loss: cross-entropy with label smoothing, each image weighed by its class's weight.

PyTorch's `CrossEntropyLoss(weight=w, label_smoothing=ε)` weighs the smoothing term's share of every
class by that class's weight, so each image of a common class is also pulled towards the rare
class, by ε / C · w_rare. Where w_rare / w_common passes (1 − ε + ε / C) / (ε / C) (19 for two
classes at ε = 0.1: a 5 % class), that pull wins over the image's own label and the network learns
to call everything the rare class. Here an image's whole smoothed loss is weighed by its own class's
weight (the usual meaning of a class-weighted loss; without smoothing both are the same), so
smoothing never favours a class.
"""

from __future__ import annotations

import torch
from torch import nn


def weighted_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None, label_smoothing: float = 0.0
) -> torch.Tensor:  # fmt: skip
    """The mean smoothed cross-entropy of `logits` (N×C) on `labels` (N), each image weighed by
    `weight[label]` (None: all alike), divided by the weights' sum as PyTorch's weighted mean is."""
    losses = nn.functional.cross_entropy(logits, labels, reduction="none", label_smoothing=label_smoothing)
    if weight is None:
        return losses.mean()
    per_image = weight.to(losses.dtype)[labels]
    return (losses * per_image).sum() / per_image.sum()
