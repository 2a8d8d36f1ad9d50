"""Saying "I don't know": an out-of-distribution score on the model's own features, and its threshold.

The score is the k-th nearest-neighbour distance (Sun et al. 2022, "Out-of-distribution detection
with deep nearest neighbors"): the cosine distance from an image's mean feature vector (the last
feature map averaged over all positions) to its k-th nearest neighbour among a bank of training
images' vectors. Images like the training images lie close to some of them; a photograph, a
texture or a flat grey square given to a garment classifier does not. It was picked by the figures
(BENCHMARKS.md "Saying I don't know"): on the default model it separated every set of
`pipeline/data/outliers.py` from the test images better than the maximum softmax probability and
the energy score, which read only the logits, and better than the same distance on the
attention-pooled vector v, which sees only the attended region (what a texture or a photograph
looks like everywhere else is what gives it away). Model files from before 2026-12-02 compare v
(`READS`); they keep doing so.

The bank lives in the network (a buffer), so the PyTorch model, the served model and the ONNX file
all compute the same score; the threshold and what it means are in `pipeline/model/unknown.py`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional

MEAN_FEATURES, EMBEDDING = "mean_features", "embedding"
DETECTOR = "knn-cosine-mean-features"  # the detector new models get, as the model file records it
READS = {DETECTOR: MEAN_FEATURES, "knn-cosine": EMBEDDING}  # detector name → the vector it reads


class NearestNeighbours(nn.Module):
    """Cosine distance to the k-th nearest of `size` stored feature vectors (unit length, `channels`
    long); `reads` says which vector of an image it is given (the network picks it)."""

    def __init__(self, size: int, channels: int, neighbours: int, reads: str = MEAN_FEATURES):
        super().__init__()
        self.neighbours = min(neighbours, size)
        self.reads = reads
        self.register_buffer("bank", torch.zeros(size, channels))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        with torch.autocast(features.device.type, enabled=False):  # distances in fp32, also under bf16 autocast
            query = functional.normalize(features.float(), dim=1)
            similarity = query @ self.bank.T
            return 1 - similarity.topk(self.neighbours, dim=1).values[:, -1]


def bank_rows(count: int, size: int, seed: int) -> torch.Tensor:
    """Which of `count` training images go into a bank of at most `size` (a seeded random choice, sorted)."""
    if count <= size:
        return torch.arange(count)
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:size].sort().values


def unit_rows(features: torch.Tensor) -> torch.Tensor:
    """Feature vectors scaled to unit length, as the bank holds them."""
    return functional.normalize(features.float(), dim=1)


def logit_scores(logits: torch.Tensor) -> dict[str, np.ndarray]:
    """The two logit-only scores the detector is compared with: maximum softmax probability and energy
    (negated, so higher means more novel as for the detector's own score)."""
    return {
        "max_softmax": (-logits.softmax(1).max(1).values).numpy(),
        "energy": (-torch.logsumexp(logits, 1)).numpy(),
    }
