"""Calibrated confidence: temperature scaling (Guo et al. 2017), fitted on the validation split after
training. One number T divides the logits (the model keeps it as a buffer, so every answer, the ONNX
export included, is calibrated); the predicted class never changes. Expected calibration error
(15 equal-width bins of the top class's confidence) before and after, from the same bins as the
reliability diagram.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

BINS = 15


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, steps: int = 100) -> float:
    """The temperature T > 0 that minimises the cross-entropy of `logits` / T on `labels` (N×classes, N)."""
    logits, labels = logits.detach().float().cpu(), labels.cpu()
    log_t = torch.zeros((), requires_grad=True)  # optimise log T: T stays positive
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def calibration_error(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    """Expected calibration error of the top class, 15 bins (0: confidence equals accuracy): the
    reliability diagram's gaps weighted by each bin's share of the images."""
    bins = reliability(probabilities.float().cpu().numpy(), labels.cpu().numpy())
    return float(np.nansum(bins["share"] * np.abs(bins["accuracy"] - bins["confidence"])))


def reliability(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per confidence bin: mean confidence, accuracy and share of the images (the reliability diagram)."""
    confidence, predicted = probabilities.max(1), probabilities.argmax(1)
    bins = np.minimum((confidence * BINS).astype(int), BINS - 1)
    counts = np.bincount(bins, minlength=BINS)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(bins, confidence, BINS) / counts
        accuracy = np.bincount(bins, predicted == labels, BINS) / counts
    return {"confidence": mean_confidence, "accuracy": accuracy, "share": counts / len(labels)}
