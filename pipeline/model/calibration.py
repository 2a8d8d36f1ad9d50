"""Calibrated confidence: temperature scaling (Guo et al. 2017), fitted on the validation split after
training. One number T divides the logits; a model trained with class weights (`train.class_weights`)
also has their pull taken out: the weighted loss learns p(k | x) × w_k, so log w_k is subtracted from
each logit (`prior_offset`; the post-hoc logit adjustment of Menon et al. 2021), and T is fitted with
it. The model keeps both as buffers, so every probability, the ONNX export's included, is calibrated;
the answer weighs them back (`pipeline.model.decision`), so it does not change. Expected calibration
error (15 equal-width bins of the top class's confidence) before and after, from the same bins as the
reliability diagram, and the classwise error, which also sees a rare class counted too often.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

BINS = 15


def prior_offset(weights: torch.Tensor | None, classes: int) -> torch.Tensor:
    """What to add to the logits of a model trained with class `weights` (None: none) for probabilities
    as if it had not been: -log w_k per class (zeros without weights)."""
    if weights is None:
        return torch.zeros(classes)
    return -weights.detach().float().cpu().log()


def fit_temperature(
    logits: torch.Tensor, labels: torch.Tensor, offset: torch.Tensor | None = None, steps: int = 100
) -> float:  # fmt: skip
    """The temperature T > 0 that minimises the cross-entropy of `logits` / T (+ `offset`, one value
    per class) on `labels` (N×classes, N)."""
    logits, labels = logits.detach().float().cpu(), labels.cpu()
    offset = torch.zeros(logits.shape[1]) if offset is None else offset.float().cpu()
    log_t = torch.zeros((), requires_grad=True)  # optimise log T: T stays positive
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(logits / log_t.exp() + offset, labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def calibration_error(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    """Expected calibration error of the top class, 15 bins (0: confidence equals accuracy): the
    reliability diagram's gaps weighted by each bin's share of the images."""
    bins = reliability(probabilities.float().cpu().numpy(), labels.cpu().numpy())
    return float(np.nansum(bins["share"] * np.abs(bins["accuracy"] - bins["confidence"])))


def class_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    """Classwise calibration error (Kull et al. 2019): for each class, 15 bins of its probability, the
    gap between the mean probability and how often the images are of that class, weighted by each
    bin's share of the images; the mean over the classes. Unlike the top class's error, it sees a
    rare class counted more often than it comes."""
    probabilities, labels = probabilities.float().cpu().numpy(), labels.cpu().numpy()
    errors = []
    for index in range(probabilities.shape[1]):
        bins = np.minimum((probabilities[:, index] * BINS).astype(int), BINS - 1)
        gaps = np.bincount(bins, probabilities[:, index], BINS) - np.bincount(bins, labels == index, BINS)
        errors.append(np.abs(gaps).sum() / len(labels))
    return float(np.mean(errors))


def reliability(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per confidence bin: mean confidence, accuracy and share of the images (the reliability diagram)."""
    confidence, predicted = probabilities.max(1), probabilities.argmax(1)
    bins = np.minimum((confidence * BINS).astype(int), BINS - 1)
    counts = np.bincount(bins, minlength=BINS)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(bins, confidence, BINS) / counts
        accuracy = np.bincount(bins, predicted == labels, BINS) / counts
    return {"confidence": mean_confidence, "accuracy": accuracy, "share": counts / len(labels)}
