"""When the model answers "unknown": the threshold on the novelty score (`pipeline/model/novelty.py`)
that `train.unknown.accept` (95 %) of the validation images stay under; an image above it is
unlike anything the model was trained on (its class is still given). The rule travels in the model
file and the ONNX file's metadata. Imports neither PyTorch nor MLflow (the ONNX path needs neither).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Novelty:
    """The detector's settings and threshold, as the model file and the ONNX metadata record them."""

    neighbours: int
    bank: int
    threshold: float
    accept: float
    detector: str = "knn-cosine"  # as files before 2026-12-02 record it; new ones: "knn-cosine-mean-features"

    def unknown(self, scores: np.ndarray) -> np.ndarray:
        """Which scores are past the threshold: images the model does not know."""
        return np.asarray(scores) > self.threshold

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"novelty over {self.threshold:.4g} (cosine distance to the {self.neighbours}-th nearest of "
            f"{self.bank} training images' {'attention-pooled' if self.detector == 'knn-cosine' else 'mean'} "
            f"features; accepts {self.accept:.0%} of validation images)"
        )

    @classmethod
    def from_dict(cls, recorded: dict | None) -> Novelty | None:
        return cls(**recorded) if recorded else None


def acceptance_threshold(val_scores: np.ndarray, accept: float) -> float:
    """The score that `accept` of the validation images do not exceed."""
    return float(np.quantile(val_scores, accept, method="inverted_cdf"))
