"""How class probabilities become one answer. By default the most probable class; for a task with a
positive class (`data.positive_class`: the defect, the lesion), that class whenever its probability
reaches a threshold, chosen by the train stage on the validation split to find
`train.positive_recall` of its images on new ones with `train.positive_confidence`
(`pipeline.model.threshold`), or whenever it is the most probable: the threshold only adds to what
the default answer finds (a few validation images of the class can place it above the default's).
A model trained with class weights answers as it was trained to: its calibrated probabilities
have the weights' pull taken out (`pipeline.model.calibration`), and the answer weighs each class's
probability by its weight again (balanced weights: the class most probable were every class equally
common), so the probabilities say how often such an image is of a class while the answer keeps the
rare class's recall. The rule travels in the model file and in the ONNX file's metadata, so
evaluate, register, predict, the server and the demo all decide alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from pipeline.core.errors import PipelineError


@dataclass(frozen=True)
class Decision:
    """The rule, and what it gave on the validation split. No positive class: the most probable one."""

    positive_class: str | None = None
    threshold: float | None = None
    target_recall: float | None = None
    val_recall: float | None = None
    val_precision: float | None = None
    val_positives: int | None = None
    confidence: float | None = None
    confirmed: bool | None = None  # False: too few validation images of the class to confirm the target
    weights: list[float] | None = None  # the training loss's class weights, taken out of the probabilities

    def classes(self, probabilities: np.ndarray, classes: list[str]) -> np.ndarray:
        """The decided class index of each row of `probabilities` (N×classes)."""
        weighed = probabilities * np.asarray(self.weights) if self.weights is not None else probabilities
        most_probable = weighed.argmax(1)
        if self.positive_class is None:
            return most_probable
        index = classes.index(self.positive_class)
        others = weighed.copy()
        others[:, index] = -np.inf
        flagged = (probabilities[:, index] >= self.threshold) | (most_probable == index)
        return np.where(flagged, index, others.argmax(1))

    def as_dict(self) -> dict | None:
        return asdict(self) if self.positive_class is not None or self.weights is not None else None

    def describe(self) -> str:
        if self.positive_class is None:
            if self.weights is not None:
                weights = " / ".join(f"{weight:.3g}" for weight in self.weights)
                return f"the most probable class, each weighed by its training weight (× {weights})"
            return "the most probable class"
        target = f"target {self.target_recall:.0%}"
        if self.confidence is not None:
            target += f", met on new images with {self.confidence:.0%} confidence"
            if not self.confirmed:
                target += f", which {self.val_positives} images of it cannot confirm: every one flagged"
        return (
            f"{self.positive_class} when its probability ≥ {shown(self.threshold)} or it is the most probable "
            f"(validation: recall {self.val_recall:.1%} of {self.val_positives}, precision "
            f"{self.val_precision:.1%}; {target})"
        )

    @classmethod
    def from_dict(cls, recorded: dict | None) -> Decision:
        return cls(**recorded) if recorded else cls()


def shown(probability: float) -> str:
    """A probability in 4 significant digits, or as many as it takes not to round it to 1 (0.9999996)."""
    text = f"{probability:.4g}"
    return f"{probability:.12f}".rstrip("0") if text == "1" and probability < 1 else text


def top_classes(probabilities: np.ndarray, k: int) -> np.ndarray:
    """The indices of the `k` most probable classes of each row (N×classes, or one row), the most
    probable first; equal probabilities in class order."""
    return np.argsort(-probabilities, axis=-1, kind="stable")[..., :k]


def check_positive_class(positive_class: str | None, classes: list[str]) -> None:
    """Stop early when `data.positive_class` names no class of the data."""
    if positive_class is not None and positive_class not in classes:
        raise PipelineError(
            f"params.yaml: data.positive_class {positive_class!r} is not a class of the data ({', '.join(classes)}); "
            "name one of them, or null for the most probable class"
        )
