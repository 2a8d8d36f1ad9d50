"""The evaluate stage's classification and ranking figures on known predictions."""

import numpy as np
import pytest
import torch

from pipeline.evaluate import (
    MIN_CLASS_IMAGES,
    class_top_up,
    classification_metrics,
    deletion_figures,
    ranking_metrics,
    sample,
)

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


def test_a_rare_answered_class_is_topped_up_to_its_share_of_the_deletion_sample():
    answered = torch.zeros(2000, dtype=torch.long)
    answered[torch.randperm(2000, generator=torch.Generator().manual_seed(3))[:60]] = 1  # 3 % called defective
    chosen = sample(torch.arange(2000), 500, seed=0)
    assert (answered[chosen] == 1).sum() < MIN_CLASS_IMAGES * 3  # a random sample holds few of them
    extra = class_top_up(chosen, answered, 2, seed=0)
    assert set(extra.tolist()).isdisjoint(chosen.tolist()) and len(set(extra.tolist())) == len(extra)
    assert (answered[extra] == 1).all()  # only the rare class is topped up ...
    assert (answered[torch.cat([chosen, extra])] == 1).sum() == 60  # ... to all it has (its share is 250)


def test_no_top_up_where_each_class_has_its_share_and_the_top_up_is_seeded():
    answered = torch.arange(1000) % 4
    chosen = torch.arange(400)  # 100 of each: the share of 4 classes
    assert len(class_top_up(chosen, answered, 4, seed=0)) == 0
    chosen = torch.arange(0, 400, 2)  # classes 0 and 2 only: 1 and 3 get 50 each
    extra = class_top_up(chosen, answered, 4, seed=0)
    assert torch.bincount(answered[extra], minlength=4).tolist() == [0, 50, 0, 50]
    assert torch.equal(extra, class_top_up(chosen, answered, 4, seed=0))


def test_with_many_classes_no_share_reaches_the_minimum_and_nothing_is_added():
    answered = torch.arange(20_000) % 100  # 100 classes: a share of 5 in a sample of 500
    chosen = torch.arange(0, 20_000, 40)  # 500 images of 5 classes: 95 have none
    assert 500 // 100 < MIN_CLASS_IMAGES and len(class_top_up(chosen, answered, 100, seed=0)) == 0
    assert len(class_top_up(chosen, answered % 50, 50, seed=0)) == 45 * 10  # 50 classes: a share of 10


def test_the_figures_over_all_are_the_random_samples_and_the_top_up_counts_for_its_class():
    steps = np.linspace(1, 0, 5)
    random_rows = np.tile(steps, (20, 1))  # 20 random images: 15 of class 0, 5 of class 1
    topped_up = np.tile(steps**4, (10, 1))  # 10 more of class 1, their probability falls faster
    followed = np.array([0] * 15 + [1] * 5 + [1] * 10)
    curves = np.vstack([random_rows, topped_up])
    per_image = {"attention": (curves, followed), "gradcam": (curves, followed), "random": (curves + 0.1, followed)}
    figures, mean_curves = deletion_figures(per_image, 20, ["ok", "defective"])
    assert figures["faithfulness_images"] == 20 and figures["class_top_up_images"] == 10
    assert figures["deletion_auc"]["attention"] == pytest.approx(0.5)  # the random rows' straight line only
    np.testing.assert_allclose(mean_curves["attention"], steps)
    defective = figures["by_predicted_class"]["defective"]
    assert defective["images"] == 15 and defective["deletion_auc"]["attention"] < 0.5  # the top-up counts here
    assert figures["by_predicted_class"]["ok"]["images"] == 15
