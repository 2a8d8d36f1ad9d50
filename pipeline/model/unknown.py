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
    detector: str = "knn-cosine"

    def unknown(self, scores: np.ndarray) -> np.ndarray:
        """Which scores are past the threshold: images the model does not know."""
        return np.asarray(scores) > self.threshold

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"novelty over {self.threshold:.4g} (cosine distance to the {self.neighbours}-th nearest of "
            f"{self.bank} training images; accepts {self.accept:.0%} of validation images)"
        )

    @classmethod
    def from_dict(cls, recorded: dict | None) -> Novelty | None:
        return cls(**recorded) if recorded else None


def acceptance_threshold(val_scores: np.ndarray, accept: float) -> float:
    """The score that `accept` of the validation images do not exceed."""
    return float(np.quantile(val_scores, accept, method="inverted_cdf"))


def separation(known: np.ndarray, outliers: np.ndarray) -> dict[str, float]:
    """How well scores (higher: more novel) tell `outliers` from `known` images: AUROC, and FPR95, the
    share of outliers still accepted where 95 % of the known images are (lower is better)."""
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.zeros(len(known)), np.ones(len(outliers))]
    accepted_at_95 = float(np.mean(outliers <= np.quantile(known, 0.95)))
    return {"auroc": float(roc_auc_score(labels, np.r_[known, outliers])), "fpr95": accepted_at_95}
