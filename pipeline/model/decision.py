"""How class probabilities become one answer. By default the most probable class; for a task with a
positive class (`data.positive_class`: the defect, the lesion), that class whenever its probability
reaches a threshold, chosen by the train stage on the validation split to find
`train.positive_recall` of its images on new ones with `train.positive_confidence` (`threshold_for`).
The rule travels in the model file and in the ONNX file's metadata, so evaluate, register, predict,
the server and the demo all decide alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import beta

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

    def classes(self, probabilities: np.ndarray, classes: list[str]) -> np.ndarray:
        """The decided class index of each row of `probabilities` (N×classes)."""
        if self.positive_class is None:
            return probabilities.argmax(1)
        index = classes.index(self.positive_class)
        others = probabilities.copy()
        others[:, index] = -np.inf
        return np.where(probabilities[:, index] >= self.threshold, index, others.argmax(1))

    def as_dict(self) -> dict | None:
        return asdict(self) if self.positive_class is not None else None

    def describe(self) -> str:
        if self.positive_class is None:
            return "the most probable class"
        target = f"target {self.target_recall:.0%}"
        if self.confidence is not None:
            target += f", met on new images with {self.confidence:.0%} confidence"
            if not self.confirmed:
                target += f", which {self.val_positives} images of it cannot confirm: every one flagged"
        return (
            f"{self.positive_class} when its probability ≥ {self.threshold:.4g} (validation: recall "
            f"{self.val_recall:.1%} of {self.val_positives}, precision {self.val_precision:.1%}; {target})"
        )

    @classmethod
    def from_dict(cls, recorded: dict | None) -> Decision:
        return cls(**recorded) if recorded else cls()


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


def choose_threshold(
    probabilities: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    positive_class: str,
    target_recall: float,
    confidence: float,
    calibrated: bool = True,
    class_weights: np.ndarray | None = None,
) -> Decision:
    """The threshold on the positive class's probability for `target_recall` with `confidence`, chosen
    on `probabilities` (the validation split's), with its recall and precision there (`threshold_for`).
    `class_weights`: the training loss's, whose pull on the probabilities the expected recall takes out."""
    index = classes.index(positive_class)
    positive = labels == index
    scores = probabilities[:, index]
    if not positive.any():
        raise PipelineError(
            f"data.positive_class {positive_class!r}: no image of it in the validation split, so no threshold "
            "can be chosen; add images of it or raise data.val_fraction"
        )
    expected = unweighted(probabilities, class_weights)[:, index] if calibrated else None
    threshold, confirmed = threshold_for(scores, positive, target_recall, confidence, expected)
    flagged = scores >= threshold
    return Decision(
        positive_class=positive_class,
        threshold=threshold,
        target_recall=target_recall,
        val_recall=float((flagged & positive).sum() / positive.sum()),
        val_precision=float((flagged & positive).sum() / flagged.sum()),
        val_positives=int(positive.sum()),
        confidence=confidence,
        confirmed=confirmed,
    )


def unweighted(probabilities: np.ndarray, class_weights: np.ndarray | None) -> np.ndarray:
    """`probabilities` of a model trained with a loss weighing class k by w_k, as if unweighted: each
    class's probability divided by its weight, renormalised (the weights act as a prior that favours
    rare classes, which the decision wants and the expected recall must not count)."""
    if class_weights is None:
        return probabilities
    divided = probabilities / np.where(class_weights > 0, class_weights, 1.0)
    return divided / divided.sum(1, keepdims=True)


def allowed_misses(count: int, target_recall: float, confidence: float) -> tuple[int, bool]:
    """How many of `count` validation images of the class a threshold may leave below it and still
    find, with `confidence`, `target_recall` of the class's images at large (the share of the class
    scoring below the j-th lowest of `count` is Beta(j, count + 1 - j) distributed), and whether any
    number can: with too few images even flagging every one does not confirm the target (0, False)."""
    ranks = np.arange(1, count + 1)
    confirmed = int((beta.cdf(1 - target_recall, ranks, count + 1 - ranks) >= confidence).sum())
    return max(confirmed - 1, 0), confirmed > 0


def threshold_for(
    scores: np.ndarray, positive: np.ndarray, target_recall: float, confidence: float, expected: np.ndarray | None
) -> tuple[float, bool]:  # fmt: skip
    """The highest threshold on `scores` that, judged by the positive images (`positive`), finds
    `target_recall` of the class on new images with `confidence` (`allowed_misses`: a threshold that
    merely flags that share of the split's positives falls short about every other time), and
    whether the images confirm it; given `expected` (each image's calibrated probability of the
    class), no higher than the one above which those probabilities expect that share of the class.
    Labels people give either way (a faint crack) put the first where the few borderline images the
    split happens to hold fall; the model's probabilities, learnt on the larger training split,
    count every image's share of them."""
    misses, confirmed = allowed_misses(int(positive.sum()), target_recall, confidence)
    threshold = float(np.sort(scores[positive])[misses])
    if expected is not None and expected.sum() > 0:
        order = np.argsort(-scores, kind="stable")
        found = np.cumsum(expected[order]) / expected.sum()
        threshold = min(threshold, float(scores[order][min(np.searchsorted(found, target_recall), len(order) - 1)]))
    return threshold, confirmed
