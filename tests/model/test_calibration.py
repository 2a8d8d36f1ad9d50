"""Temperature scaling, with the class weights' pull taken out: fitted on the validation split, kept
in the model (and its ONNX export), probabilities whose confidence matches their accuracy and that
count a rare class as often as it comes, answers as the weighted loss trained them to."""

import json

import numpy as np
import pytest
import torch

from pipeline import evaluate, export, train
from pipeline.data.splits import load_split
from pipeline.model import onnx_file
from pipeline.model.calibration import (
    calibration_error,
    class_calibration_error,
    fit_temperature,
    prior_offset,
    reliability,
)
from pipeline.model.decision import Decision
from pipeline.model.model_file import load_model
from pipeline.training.runtime import predict_batches, select_runtime
from pipeline.training.steps import class_weights
from tests.synthetic import CLASSES, prepare, write_dataset


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


@pytest.mark.parametrize("prevalence", [0.31, 0.1])
def test_the_class_weights_pull_taken_out_the_rare_class_is_counted_as_often_as_it_comes(prevalence):
    """A model trained with balanced class weights learns p(k | x) × w_k: its rare class's probability
    is inflated. Temperature alone keeps most of that (the mean probability of the rare class far
    above its share, a reliability curve above the diagonal); fitted with the weights' pull taken
    out, the probabilities count the rare class as often as it comes, and weighing them back by the
    weights answers exactly as the weighted model did."""
    generator = torch.Generator().manual_seed(1)
    count = 20_000
    evidence = torch.randn(count, generator=generator) * 2.5 + torch.logit(torch.tensor(prevalence))
    truth = torch.sigmoid(evidence)  # each image's true probability of the rare class (1)
    labels = (torch.rand(count, generator=generator) < truth).long()
    weights = class_weights(labels, 2)
    true_logits = torch.stack([torch.zeros(count), evidence], 1)
    weighted = 1.7 * (true_logits + weights.log())  # the weighted loss's logits, over-confident
    offset = prior_offset(weights, 2)
    alone = (weighted / fit_temperature(weighted, labels)).softmax(1)[:, 1]
    taken_out = (weighted / fit_temperature(weighted, labels, offset) + offset).softmax(1)
    share = labels.float().mean().item()
    assert abs(taken_out[:, 1].mean().item() - share) < 0.01 < alone.mean().item() - share
    middle = (taken_out[:, 1] > 0.4) & (taken_out[:, 1] < 0.6)  # "even odds" means even odds
    assert abs(labels[middle].float().mean().item() - 0.5) < 0.05
    inflated = (alone > 0.4) & (alone < 0.6)
    assert labels[inflated].float().mean().item() < 0.4
    both = torch.stack([1 - alone, alone], 1)
    assert class_calibration_error(taken_out, labels) < 0.01 < class_calibration_error(both, labels)
    answers = Decision(weights=weights.tolist()).classes(taken_out.numpy(), ["common", "rare"])
    np.testing.assert_array_equal(answers, weighted.argmax(1).numpy())


def test_the_calibration_error_is_torchmetrics_expected_calibration_error():
    from torchmetrics.functional.classification import multiclass_calibration_error

    logits, labels = overconfident(2.5)
    probabilities = logits.softmax(1)
    reference = multiclass_calibration_error(probabilities, labels, 10, n_bins=15, norm="l1")
    assert calibration_error(probabilities, labels) == pytest.approx(float(reference), abs=1e-5)
    assert calibration_error(probabilities, labels.roll(1)) > 0.5  # wrong labels: far from calibrated


def test_the_classwise_error_is_torchmetrics_binary_calibration_error_of_each_class():
    from torchmetrics.functional.classification import binary_calibration_error

    generator = torch.Generator().manual_seed(0)
    probabilities = torch.randn(3000, 4, generator=generator).mul(2).softmax(1)
    labels = torch.multinomial(probabilities.pow(2), 1, generator=generator)[:, 0]  # drawn sharper
    reference = torch.stack(
        [binary_calibration_error(probabilities[:, k].contiguous(), (labels == k).long(), n_bins=15) for k in range(4)]
    )
    assert class_calibration_error(probabilities, labels) == pytest.approx(float(reference.mean()), abs=1e-5)
    honest = torch.multinomial(probabilities, 1, generator=generator)[:, 0]
    assert class_calibration_error(probabilities, honest) < 0.02 < class_calibration_error(probabilities, labels)


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
    images = write_dataset(root / "images", {"train": 40, "test": 20})
    for extra in sorted((images / "train" / CLASSES[0]).iterdir())[:16]:
        extra.unlink()  # 24 / 40 / 40 images: class weights
    settings = {"epochs": 4, "batch_size": 16, "precision": "fp32"}
    with pytest.MonkeyPatch.context() as patch:
        cfg = prepare(images, root / "project", patch, train=settings)
        trained = train.run(cfg)
        evaluate.run(cfg)
        export.run(cfg)
    return cfg, trained


def test_the_model_file_and_its_onnx_export_answer_with_the_fitted_calibration(calibrated):
    cfg, trained = calibrated
    fitted = trained.metrics["calibration"]
    model, info = load_model(cfg.paths.model_file)
    assert info.temperature == pytest.approx(fitted["temperature"]) and info.temperature != 1.0
    assert float(model.temperature) == pytest.approx(info.temperature)
    labelled = torch.cat([load_split(cfg.paths.processed, split).labels for split in ("train", "val")])
    weights = class_weights(labelled, len(info.classes))  # the folder's shares, not the split's
    assert info.rule.weights == pytest.approx(weights.tolist()) and len(set(info.rule.weights)) > 1
    assert trained.metrics["class_weights"] == pytest.approx(dict(zip(info.classes, weights.tolist(), strict=True)))
    torch.testing.assert_close(model.offset, -weights.log())
    test = load_split(cfg.paths.processed, "test")
    logits = predict_batches(model, test.images, 64, select_runtime("cpu", "fp32")).logits
    model.temperature.fill_(1.0)
    model.offset.zero_()
    raw = predict_batches(model, test.images, 64, select_runtime("cpu", "fp32")).logits
    torch.testing.assert_close(logits, raw / info.temperature - weights.log())
    answers = info.rule.classes(logits.softmax(1).numpy(), info.classes)
    np.testing.assert_array_equal(answers, raw.argmax(1).numpy())  # as the weighted loss trained it
    onnx_logits = onnx_file.predict(onnx_file.session(cfg.paths.onnx_file), test.images.numpy(), 64)["logits"]
    np.testing.assert_allclose(onnx_logits, logits.numpy(), atol=1e-3)


def test_evaluate_reports_the_calibration_error_before_and_after(calibrated):
    cfg, _ = calibrated
    evaluated = json.loads((cfg.paths.metrics / "eval.json").read_text())
    checked = evaluated["calibration"]
    assert set(checked) == {"temperature", "ece", "ece_uncalibrated", "class_ece", "class_ece_uncalibrated"}
    assert 0 <= checked["ece"] <= 1 and 0 <= checked["class_ece"] <= 1
    per_class = evaluated["per_class"].values()  # how often each class comes, how often it is expected
    assert sum(m["share"] for m in per_class) == pytest.approx(1.0)
    assert sum(m["mean_probability"] for m in per_class) == pytest.approx(1.0, abs=1e-4)
    assert (cfg.paths.plots / "reliability.png").stat().st_size > 5_000
