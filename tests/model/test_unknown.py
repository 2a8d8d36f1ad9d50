"""The "unknown" answer: a nearest-neighbour novelty score in the model's features, its threshold on
the validation split, and evaluate's check against out-of-distribution sets made here."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from pipeline import evaluate, train
from pipeline.data.outliers import SETS, outlier_set
from pipeline.data.splits import load_split
from pipeline.evaluate import separation
from pipeline.model.model_file import ModelInfo, load_model
from pipeline.model.novelty import DETECTOR, EMBEDDING, NearestNeighbours, bank_rows
from pipeline.model.unknown import Novelty, acceptance_threshold
from pipeline.training.runtime import mean_features, predict_batches, select_runtime
from tests.synthetic import prepared_project


def test_the_score_is_the_cosine_distance_to_the_kth_nearest_stored_vector():
    scorer = NearestNeighbours(3, 2, neighbours=2)
    scorer.bank.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    scores = scorer(torch.tensor([[5.0, 0.0], [1.0, 1.0], [0.0, -3.0]]))  # lengths do not matter
    # (5, 0): nearest (1, 0) at 0, second (0, 1) at 1; (1, 1): both axes at 1 - cos 45°; (0, -3): 1 and 1
    torch.testing.assert_close(scores, torch.tensor([1.0, 1 - 2**-0.5, 1.0]))
    assert NearestNeighbours(3, 2, neighbours=10).neighbours == 3  # never more than the bank holds


def test_the_threshold_accepts_the_asked_share_and_the_rule_round_trips():
    scores = np.arange(1, 101) / 100
    threshold = acceptance_threshold(scores, 0.95)
    rule = Novelty(neighbours=5, bank=100, threshold=threshold, accept=0.95)
    assert rule.unknown(scores).mean() == pytest.approx(0.05) and Novelty.from_dict(rule.as_dict()) == rule
    assert Novelty.from_dict(None) is None and "5-th nearest of 100" in rule.describe()


def test_separation_is_perfect_only_for_a_score_that_separates():
    known, outliers = np.linspace(0, 1, 200), np.linspace(2, 3, 50)
    assert separation(known, outliers) == {"auroc": 1.0, "fpr95": 0.0}
    constant = separation(np.zeros(200), np.zeros(50))  # a detector that says the same of everything
    assert constant == {"auroc": 0.5, "fpr95": 1.0}


def test_the_bank_is_a_seeded_sorted_choice():
    assert bank_rows(5, 10, seed=0).tolist() == [0, 1, 2, 3, 4]
    chosen = bank_rows(1000, 10, seed=3)
    assert len(set(chosen.tolist())) == 10 and chosen.tolist() == sorted(chosen.tolist())
    assert torch.equal(chosen, bank_rows(1000, 10, seed=3)) and not torch.equal(chosen, bank_rows(1000, 10, seed=4))


def test_every_outlier_set_comes_in_the_models_image_format():
    for name in SETS:
        gray, rgb = outlier_set(name, 16, 1, count=20), outlier_set(name, 24, 3, count=20)
        assert gray.shape == (20, 1, 16, 16) and rgb.shape == (20, 3, 24, 24) and gray.dtype == np.uint8
        assert np.array_equal(gray, outlier_set(name, 16, 1, count=20))  # seeded: every run sees the same
    with pytest.raises(ValueError, match="unknown out-of-distribution set 'cats'"):
        outlier_set("cats", 16, 1)


@pytest.fixture(scope="module")
def detected(tmp_path_factory):
    root = tmp_path_factory.mktemp("unknown")
    settings = {"epochs": 6, "batch_size": 16, "precision": "fp32", "unknown": {"accept": 0.9, "neighbours": 3,
                "bank": 60}}  # fmt: skip
    with prepared_project(root, {"train": 40, "test": 30}, train=settings) as cfg:
        trained = train.run(cfg)
        metrics = evaluate.run(cfg)
    return cfg, trained, metrics


def test_the_model_file_keeps_the_bank_and_the_threshold_chosen_on_validation(detected):
    cfg, trained, _ = detected
    model, info = load_model(cfg.paths.model_file)
    rule = info.detector
    assert rule == Novelty(**trained.metrics["unknown"]) and rule.bank == 60 and rule.neighbours == 3
    assert model.novelty.bank.norm(dim=1).sub(1).abs().max() < 1e-5  # unit vectors of real features
    val = load_split(cfg.paths.processed, "val")
    scores = predict_batches(model, val.images, 64, select_runtime("cpu", "fp32")).novelty.numpy()
    # the share asked for is accepted, at one of its own scores (recomputed here in other batches: 1e-5 of float noise)
    assert (scores <= rule.threshold + 1e-5).mean() >= 0.9
    assert np.isclose(scores, rule.threshold, atol=1e-5).any() and rule.unknown(scores).any()


def test_the_score_reads_the_whole_feature_map_and_older_files_keep_reading_the_pooled_vector(detected):
    cfg, _, _ = detected
    model, info = load_model(cfg.paths.model_file)
    assert info.detector.detector == DETECTOR and model.novelty.bank.shape[1] == model.feature_channels
    runtime = select_runtime("cpu", "fp32")
    images = load_split(cfg.paths.processed, "test").images[:20]
    out = predict_batches(model, images, 8, runtime)
    torch.testing.assert_close(out.novelty, model.novelty(mean_features(model, images, 8, runtime)))
    pooled = out.embedding.view(len(images), -1, model.feature_channels).mean(1)  # the heads' attention-pooled vectors
    assert not torch.allclose(out.novelty, model.novelty(pooled))  # not what the attention pooled
    older = ModelInfo(**{**info.__dict__, "novelty": {**info.novelty, "detector": "knn-cosine"}}).build()
    assert older.novelty.reads == EMBEDDING and older.novelty.bank.shape[1] == older.classifier.in_features


def test_images_unlike_the_training_images_are_answered_unknown(detected):
    cfg, _, metrics = detected
    unknown = metrics["unknown"]
    assert unknown == json.loads((cfg.paths.metrics / "eval.json").read_text())["unknown"]
    assert unknown["test_flagged"] <= 0.25  # 10 % of validation asked; 90 test images
    sets = unknown["sets"]
    assert set(sets) == set(SETS) and (cfg.paths.plots / "novelty.png").stat().st_size > 5_000
    for name in ("noise", "flat", "photos", "textures"):  # nothing like a bright bar or square on dark noise
        assert sets[name]["auroc"] >= 0.9 and sets[name]["flagged"] >= 0.7, (name, sets[name])


def test_the_check_fails_for_a_detector_that_says_the_same_of_everything(detected):
    cfg, _, _ = detected
    model, info = load_model(cfg.paths.model_file)

    class Constant(nn.Module):
        reads = "embedding"

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return features.new_zeros(len(features))

    model.novelty = Constant()
    runtime = select_runtime("cpu", "fp32")
    test = predict_batches(model, load_split(cfg.paths.processed, "test").images, 64, runtime)
    checked, _ = evaluate.unknown_metrics(cfg, model, runtime, info, test)
    assert all(figures["auroc"] == 0.5 and figures["flagged"] == 0.0 for figures in checked["sets"].values())
