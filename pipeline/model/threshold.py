"""How the train stage chooses the positive class's threshold (`pipeline.model.decision`) on the
validation split: for `train.positive_recall` of the class on new images with
`train.positive_confidence`, bounded by what the calibrated probabilities expect.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy.stats import beta

from pipeline.core.errors import PipelineError
from pipeline.model.decision import Decision


def choose_threshold(
    probabilities: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    positive_class: str,
    target_recall: float,
    confidence: float,
    calibrated: bool = True,
    weights: list[float] | None = None,
) -> Decision:
    """The threshold on the positive class's probability for `target_recall` with `confidence`, chosen
    on `probabilities` (the validation split's), with the rule's recall and precision there
    (`threshold_for`; the rule also answers the class where it is the most probable, weighed by the
    class `weights`). `calibrated`: whether they are (any class weights' pull taken out,
    `pipeline.model.calibration`), and so also bound it."""
    index = classes.index(positive_class)
    positive = labels == index
    scores = probabilities[:, index]
    if not positive.any():
        raise PipelineError(
            f"data.positive_class {positive_class!r}: no image of it in the validation split, so no threshold "
            "can be chosen; add images of it or raise data.val_fraction"
        )
    expected = scores if calibrated else None
    threshold, confirmed = threshold_for(scores, positive, target_recall, confidence, expected)
    rule = Decision(
        positive_class=positive_class,
        threshold=threshold,
        target_recall=target_recall,
        val_positives=int(positive.sum()),
        confidence=confidence,
        confirmed=confirmed,
        weights=weights,
    )
    flagged = rule.classes(probabilities, classes) == index
    return replace(
        rule,
        val_recall=float((flagged & positive).sum() / positive.sum()),
        val_precision=float((flagged & positive).sum() / flagged.sum()),
    )


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
