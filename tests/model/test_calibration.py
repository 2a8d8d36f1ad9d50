"""Temperature scaling: fitted on the validation split, kept in the model (and its ONNX export), and
probabilities whose confidence matches their accuracy."""

import json

import numpy as np
import pytest
import torch

from pipeline import evaluate, export, train
from pipeline.data.splits import load_split
from pipeline.model import onnx_file
from pipeline.model.calibration import calibration_error, fit_temperature, reliability
from pipeline.model.model_file import load_model
from pipeline.training.runtime import predict_batches, select_runtime
from tests.synthetic import prepared_project


def overconfident(temperature: float, count: int = 4000) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits whose labels are drawn from softmax(logits / temperature): over-confident by that factor."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(count, 10, generator=generator) * 3
    labels = torch.multinomial((logits / temperature).softmax(1), 1, generator=generator)[:, 0]
    return logits, labels


@pytest.mark.parametrize("truth", [0.5, 2.5])  # under- and over-confident
def test_the_fitted_temperature_is_the_one_the_labels_were_drawn_with(truth):
    logits, labels = overconfident(truth)
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(truth, rel=0.1)
    before = calibration_error(logits.softmax(1), labels)
    after = calibration_error((logits / temperature).softmax(1), labels)
    assert after < 0.03 < before  # 15-bin ECE: only the fitted temperature makes confidence honest


def test_the_calibration_error_is_torchmetrics_expected_calibration_error():
    from torchmetrics.functional.classification import multiclass_calibration_error

    logits, labels = overconfident(2.5)
    probabilities = logits.softmax(1)
    reference = multiclass_calibration_error(probabilities, labels, 10, n_bins=15, norm="l1")
    assert calibration_error(probabilities, labels) == pytest.approx(float(reference), abs=1e-5)
    assert calibration_error(probabilities, labels.roll(1)) > 0.5  # wrong labels: far from calibrated


def test_the_reliability_bins_hold_confidence_accuracy_and_share():
    probabilities = np.array([[0.92, 0.08], [0.9, 0.1], [0.55, 0.45], [0.58, 0.42]])
    bins = reliability(probabilities, np.array([0, 1, 0, 0]))  # the 0.9 answer is wrong
    seen = bins["share"] > 0
    assert bins["share"].sum() == pytest.approx(1.0) and seen.sum() == 2  # 15 bins: 0.53-0.6 and 0.87-0.93
    assert bins["accuracy"][seen].tolist() == [1.0, 0.5]
    np.testing.assert_allclose(bins["confidence"][seen], [0.565, 0.91])


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    root = tmp_path_factory.mktemp("calibration")
    settings = {"epochs": 4, "batch_size": 16, "precision": "fp32"}
    with prepared_project(root, {"train": 40, "test": 20}, train=settings) as cfg:
        trained = train.run(cfg)
        evaluate.run(cfg)
        export.run(cfg)
    return cfg, trained


def test_the_model_file_and_its_onnx_export_answer_with_the_fitted_temperature(calibrated):
    cfg, trained = calibrated
    fitted = trained.metrics["calibration"]
    model, info = load_model(cfg.paths.model_file)
    assert info.temperature == pytest.approx(fitted["temperature"]) and info.temperature != 1.0
    assert float(model.temperature) == pytest.approx(info.temperature)
    test = load_split(cfg.paths.processed, "test")
    logits = predict_batches(model, test.images, 64, select_runtime("cpu", "fp32")).logits
    model.temperature.fill_(1.0)
    raw = predict_batches(model, test.images, 64, select_runtime("cpu", "fp32")).logits
    torch.testing.assert_close(logits, raw / info.temperature)  # the same classes, other confidence
    onnx_logits = onnx_file.predict(onnx_file.session(cfg.paths.onnx_file), test.images.numpy(), 64)["logits"]
    np.testing.assert_allclose(onnx_logits, logits.numpy(), atol=1e-3)


def test_evaluate_reports_the_calibration_error_before_and_after(calibrated):
    cfg, _ = calibrated
    checked = json.loads((cfg.paths.metrics / "eval.json").read_text())["calibration"]
    assert set(checked) == {"temperature", "ece", "ece_uncalibrated"} and 0 <= checked["ece"] <= 1
    assert (cfg.paths.plots / "reliability.png").stat().st_size > 5_000
