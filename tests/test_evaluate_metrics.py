"""The evaluate stage's classification and ranking figures on known predictions."""

import numpy as np
import pytest

from pipeline.evaluate import classification_metrics, ranking_metrics

CLASSES = ["good", "defect"]


def test_balanced_accuracy_sees_the_missed_minority_that_accuracy_hides():
    true = [0] * 90 + [1] * 10
    always_good = [0] * 100
    metrics = classification_metrics(true, always_good, CLASSES)
    assert metrics["accuracy"] == 0.9 and metrics["balanced_accuracy"] == 0.5
    assert metrics["per_class"]["defect"]["recall"] == 0


def test_roc_auc_and_average_precision_rank_the_positive_class():
    true = np.array([0] * 50 + [1] * 50)
    perfect = np.stack([1 - true, true], 1).astype(float)
    ranking = ranking_metrics(true, perfect, CLASSES)
    assert ranking["roc_auc"] == 1 and ranking["per_class"]["defect"]["average_precision"] == 1
    noise = np.random.default_rng(0).random(100)
    ranking = ranking_metrics(true, np.stack([1 - noise, noise], 1), CLASSES)
    assert ranking["roc_auc"] == pytest.approx(0.5, abs=0.15)
    reversed_scores = ranking_metrics(true, perfect[:, ::-1], CLASSES)
    assert reversed_scores["roc_auc"] == 0


def test_a_class_missing_from_the_test_split_has_no_ranking_figures():
    true = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.9, 0.1, 0], [0.6, 0.4, 0], [0.3, 0.7, 0], [0.2, 0.8, 0]])
    ranking = ranking_metrics(true, probabilities, ["a", "b", "c"])
    assert ranking["per_class"]["c"] == {"roc_auc": None, "average_precision": None}
    assert ranking["roc_auc"] == 1
