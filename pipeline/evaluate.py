"""Stage 4, evaluate: the trained model on the test split, logged to the training run in MLflow.

Writes `metrics/eval.json` (accuracy, balanced accuracy, macro-F1, per-class precision/recall/F1,
ROC AUC and average precision of each class against the rest, its share of the test split and its
mean probability, the calibration errors, throughput, and the attention checks of
`pipeline/model/attention_checks.py`: attention on near-empty regions, deletion AUC of the answered
class in the attention's order vs Grad-CAM's and a random order (over all and per answered class; with
`data.positive_class`, that class's verdict is the one warned about), and where boxes are known the pointing
game and the mass in the box, the attention's beside Grad-CAM's and a centre point's),
`metrics/predictions.csv` (for DVC's confusion-matrix plot), `plots/confusion_matrix.png`,
`plots/roc_pr.png` (ROC and precision-recall curves), `plots/attention_overlays.png` (with several
attention heads, each head's map beside their mean) and `plots/deletion_curves.png`. With a
detector, the "unknown" answer is checked on the test split and on out-of-distribution sets made
here (`pipeline/data/outliers.py`): AUROC, FPR95 and the share flagged, beside the logit-only
scores, in `eval.json` and `plots/novelty.png`.
"""

from __future__ import annotations

import logging
import time

import mlflow
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    classification_report,
    confusion_matrix,
    f1_score,
    roc_auc_score,
)
from tqdm import tqdm

from pipeline.core import figures
from pipeline.core.config import Config, load_config
from pipeline.core.durations import about
from pipeline.core.errors import run_cli
from pipeline.core.files import atomic_path, file_sha256, write_json
from pipeline.core.memory import free_for_training
from pipeline.core.tracking import key_part, resume_run
from pipeline.data.outliers import SETS, outlier_set
from pipeline.data.splits import TensorSplit, load_split
from pipeline.model import attention_checks as checks
from pipeline.model.calibration import calibration_error, class_calibration_error, reliability
from pipeline.model.gradcam import gradcam_maps
from pipeline.model.model_file import ModelInfo, load_model
from pipeline.model.network import AttentionCNN, Prediction
from pipeline.model.novelty import logit_scores
from pipeline.training.plan import fitting_batch
from pipeline.training.runtime import Runtime, head_maps, predict_batches, select_runtime
from pipeline.training.steps import activation_bytes

log = logging.getLogger(__name__)
GRADCAM_PASSES = 5  # a Grad-CAM map costs about five forward passes (128-px cells, 2-core CPU: 33 s for 766 maps)
MIN_CLASS_IMAGES = 10  # deletion figures for a predicted class with at least this many images


def classification_metrics(true: list[int], predicted: list[int], classes: list[str]) -> dict:
    """Accuracy, balanced accuracy (the mean recall of the classes), macro-F1 and per-class
    precision, recall, F1 and support."""
    labels = list(range(len(classes)))
    report = classification_report(
        true, predicted, labels=labels, target_names=classes, output_dict=True, zero_division=0
    )
    return {
        "accuracy": accuracy_score(true, predicted),
        "balanced_accuracy": report["macro avg"]["recall"],
        "macro_f1": f1_score(true, predicted, labels=labels, average="macro", zero_division=0),
        "per_class": {
            name: {k: report[name][k] for k in ("precision", "recall", "f1-score", "support")} for name in classes
        },
    }


def ranking_metrics(true: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict:
    """ROC AUC and average precision of each class against the rest (a class absent from the test
    split: None), and their macro means over the classes that have them."""
    per_class = {}
    for index, name in enumerate(classes):
        positive = true == index
        both = 0 < positive.sum() < len(true)
        per_class[name] = {
            "roc_auc": float(roc_auc_score(positive, probabilities[:, index])) if both else None,
            "average_precision": float(average_precision_score(positive, probabilities[:, index])) if both else None,
        }
    means = {}
    for key in ("roc_auc", "average_precision"):
        values = [m[key] for m in per_class.values() if m[key] is not None]
        means[key] = float(np.mean(values)) if values else None
    return {**means, "per_class": per_class}


def separation(known: np.ndarray, outliers: np.ndarray) -> dict[str, float]:
    """How well scores (higher: more novel) tell `outliers` from `known` images: AUROC, and FPR95, the
    share of outliers still accepted where 95 % of the known images are (lower is better)."""
    labels = np.r_[np.zeros(len(known)), np.ones(len(outliers))]
    accepted_at_95 = float(np.mean(outliers <= np.quantile(known, 0.95)))
    return {"auroc": float(roc_auc_score(labels, np.r_[known, outliers])), "fpr95": accepted_at_95}


def unknown_metrics(
    cfg: Config, model: AttentionCNN, runtime: Runtime, info: ModelInfo, test: Prediction
) -> tuple[dict | None, dict[str, np.ndarray]]:
    """The detector on the test split and on each out-of-distribution set (`pipeline/data/outliers.py`,
    in the model's image format): AUROC, FPR95 and the share flagged "unknown", with the AUROC of the
    logit-only scores beside; and the scores, for the histograms. None without a detector."""
    detector = info.detector
    if detector is None or test.novelty is None:
        return None, {}
    scores = {"test": test.novelty.numpy()}
    baselines = logit_scores(test.logits)
    result: dict = {"detector": detector.describe(), "threshold": detector.threshold,
                    "test_flagged": float(detector.unknown(scores["test"]).mean()), "sets": {}}  # fmt: skip
    for name in SETS:
        images = torch.from_numpy(outlier_set(name, info.image_size, info.channels, seed=cfg.data.seed))
        out = predict_batches(model, images, runtime.scoring_batch(images, cfg.evaluate.batch_size), runtime)
        scores[name] = out.novelty.numpy()
        result["sets"][name] = {
            **separation(scores["test"], scores[name]),
            "flagged": float(detector.unknown(scores[name]).mean()),
            **{f"auroc_{key}": separation(baselines[key], value)["auroc"]
               for key, value in logit_scores(out.logits).items()},
        }  # fmt: skip
    result["auroc_min"] = min(figures_["auroc"] for figures_ in result["sets"].values())
    return result, scores


def sample(indices: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """`count` of `indices`, seeded."""
    return indices[torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))[:count]]


def class_top_up(chosen: torch.Tensor, answered: torch.Tensor, classes: int, seed: int) -> torch.Tensor:
    """More test images (seeded, none of `chosen`) so that each answered class has at least its share
    of the sample, len(chosen) ÷ `classes`, where the split has that many: a random sample holds
    about 17 of 500 images of a 3 % class, too few to judge it by. None where the share is under
    MIN_CLASS_IMAGES (many classes), so the top-up is never larger than the sample."""
    quota = len(chosen) // classes
    if quota < MIN_CLASS_IMAGES:
        return chosen[:0]
    left = torch.ones(len(answered), dtype=torch.bool)
    left[chosen] = False
    have = torch.bincount(answered[chosen], minlength=classes).tolist()
    extra = []
    for index in range(classes):
        if have[index] < quota:
            extra.append(sample(torch.nonzero(left & (answered == index))[:, 0], quota - have[index], seed))
    return torch.cat(extra) if extra else chosen[:0]


def deletion_fill(cfg: Config, images: torch.Tensor, info: ModelInfo) -> torch.Tensor:
    """What deleted cells become (`evaluate.deletion_fill`): the images blurred, or the training mean colour."""
    return checks.blurred(images) if cfg.evaluate.deletion_fill == "blur" else torch.tensor(info.mean) * 255


def gradcam_batch(model: AttentionCNN, images: torch.Tensor, at_most: int, runtime: Runtime) -> int:
    """Images per Grad-CAM pass, at most `at_most`: its backward pass keeps every layer's output in
    fp32, so a batch is cut, as a training batch is, to what the free memory holds (at 128 px and
    more, 512 images took over 12 GB)."""
    size, channels = images.shape[-1], images.shape[1]
    per_image = activation_bytes(model, channels, size, Runtime(runtime.device, None))
    return min(at_most, fitting_batch(per_image, free_for_training(runtime.device)))


def attention_checks_seconds(cfg: Config, test: TensorSplit, attention: torch.Tensor, per_image: float) -> float:
    """About how long `attention_metrics` will take, from the seconds a forward pass takes per
    image: a deletion curve per order (three, sharing their ends) and a Grad-CAM map for each sampled
    image, and a Grad-CAM map for each sampled boxed one (the classes' top-up left out)."""
    count = cfg.evaluate.faithfulness_images
    images = min(count, len(test.labels))
    boxed = 0 if test.boxes is None else min(count, int(checks.boxed(test.boxes).sum()))
    steps = len(checks.deletion_steps(attention.shape[1] * attention.shape[2]))
    return ((3 * (steps - 2) + 2 + GRADCAM_PASSES) * images + GRADCAM_PASSES * boxed) * per_image


def attention_metrics(
    cfg: Config, model: AttentionCNN, runtime: Runtime, test: TensorSplit, attention: torch.Tensor, info: ModelInfo,
    answered: torch.Tensor,
) -> tuple[dict, dict[str, np.ndarray]]:  # fmt: skip
    """The attention checks on the test split, beside Grad-CAM's (`pipeline/model/gradcam.py`) on
    `evaluate.faithfulness_images` of its images (seeded): deletion curves of the answered class
    (`answered`, the decision rule's) in the attention's, Grad-CAM's and a random order, over all of
    them and per answered class (those with at least MIN_CLASS_IMAGES, each topped up to its share
    by `class_top_up`; the figures over all stay the random sample's), and, where boxes are known,
    Grad-CAM's localisation figures. The `mean` fill is the training mean."""
    grid = tuple(attention.shape[1:])
    size = tuple(test.images.shape[-2:])
    count = cfg.evaluate.faithfulness_images
    seed = cfg.data.seed
    batch = runtime.scoring_batch(test.images, cfg.evaluate.batch_size)
    cam_batch = gradcam_batch(model, test.images, batch, runtime)
    result: dict = {"map": list(grid), **checks.near_empty_figures(test.images, attention)}
    if test.boxes is not None:
        localisation = checks.localisation_figures(attention, test.boxes, size)
        boxed = sample(torch.nonzero(checks.boxed(test.boxes))[:, 0], count, seed)
        if len(boxed):
            maps = gradcam_maps(model, test.images[boxed], grid, cam_batch, answered[boxed])
            gradcam = checks.localisation_figures(maps, test.boxes[boxed], size)
            localisation |= {
                "gradcam_images": gradcam["boxed_images"],
                "gradcam_pointing_game": gradcam["pointing_game"],
                "gradcam_box_mass": gradcam["box_attention_mass"],
            }
        result["localisation"] = localisation
    chosen = sample(torch.arange(len(test.labels)), count, seed)
    if not len(chosen):
        return result, {}
    random_part = len(chosen)
    chosen = torch.cat([chosen, class_top_up(chosen, answered, len(info.classes), seed)])
    images = test.images[chosen]

    def probabilities(images: torch.Tensor) -> torch.Tensor:
        return predict_batches(model, images, batch, runtime).logits.softmax(1)

    replacement = deletion_fill(cfg, images, info)
    orders = {
        "attention": checks.map_order(attention[chosen]),
        "gradcam": checks.map_order(gradcam_maps(model, images, grid, cam_batch, answered[chosen])),
        "random": checks.random_order(len(chosen), grid[0] * grid[1], seed),
    }
    ends: dict[int, np.ndarray] = {}  # nothing and everything deleted: the same in every order
    steps = len(checks.deletion_steps(grid[0] * grid[1]))
    with tqdm(total=len(orders) * steps, desc="deletion curves", unit="step", leave=False, disable=None) as bar:
        per_image = {
            name: checks.deletion_curves(
                probabilities,
                images,
                order,
                grid,
                replacement,
                classes=answered[chosen],
                ends=ends,
                progress=bar.update,
            )
            for name, order in orders.items()
        }
    figures_, curves = deletion_figures(per_image, random_part, info.classes)
    return result | figures_, curves


def deletion_figures(
    per_image: dict[str, tuple[np.ndarray, np.ndarray]], random_part: int, classes: list[str]
) -> tuple[dict, dict[str, np.ndarray]]:
    """Deletion AUCs and verdicts from each order's curves and followed classes: over the first
    `random_part` images (the random sample), and over all per followed class with MIN_CLASS_IMAGES;
    with the mean curves of the random sample."""
    curves = {name: values[:random_part].mean(0) for name, (values, _) in per_image.items()}
    followed = next(iter(per_image.values()))[1]
    result: dict = {"faithfulness_images": random_part, "class_top_up_images": len(followed) - random_part}
    result["deletion_auc"] = {name: checks.area(curve) for name, curve in curves.items()}
    result["faithfulness"] = checks.faithfulness(result["deletion_auc"])
    result["by_predicted_class"] = {}
    for index, label in enumerate(classes):
        mine = followed == index
        if mine.sum() >= MIN_CLASS_IMAGES:
            auc = {name: checks.area(values[mine].mean(0)) for name, (values, _) in per_image.items()}
            result["by_predicted_class"][label] = {
                "images": int(mine.sum()), "deletion_auc": auc, "faithfulness": checks.faithfulness(auc)
            }  # fmt: skip
    return result, curves


def run(cfg: Config) -> dict:
    """Evaluate `models/model.pt` on the test split; write metrics and figures; log them to MLflow."""
    paths = cfg.paths
    model, info = load_model(paths.model_file)
    test = load_split(paths.processed, "test", cfg.train.loader)
    runtime = select_runtime(cfg.train.device, cfg.train.precision, backbone=cfg.model.backbone)
    model = runtime.prepare(model)
    batch = runtime.scoring_batch(test.images, cfg.evaluate.batch_size)
    predict_batches(model, test.images[:batch], batch, runtime)  # warm-up
    start = time.perf_counter()
    out = predict_batches(model, test.images, batch, runtime)
    seconds = time.perf_counter() - start
    logits, attention = out.logits, out.attention
    true = test.labels
    classes = info.classes
    probabilities = torch.softmax(logits, 1).numpy()
    predicted = torch.from_numpy(info.rule.classes(probabilities, classes))
    metrics = classification_metrics(true.tolist(), predicted.tolist(), classes)
    metrics["decision"] = info.rule.describe()
    uncalibrated = ((logits - info.offset) * info.temperature).softmax(1)  # as the network answered before calibration
    metrics["calibration"] = {
        "temperature": info.temperature,
        "ece": calibration_error(torch.from_numpy(probabilities), true),
        "ece_uncalibrated": calibration_error(uncalibrated, true),
        "class_ece": class_calibration_error(torch.from_numpy(probabilities), true),
        "class_ece_uncalibrated": class_calibration_error(uncalibrated, true),
    }
    ranking = ranking_metrics(true.numpy(), probabilities, classes)
    metrics["roc_auc"], metrics["average_precision"] = ranking["roc_auc"], ranking["average_precision"]
    for index, (name, values) in enumerate(ranking["per_class"].items()):
        metrics["per_class"][name].update(values, share=float((true == index).float().mean()),
                                          mean_probability=float(probabilities[:, index].mean()))  # fmt: skip
    metrics["test_images"] = len(true)
    metrics["inference_images_per_second"] = len(true) / seconds
    metrics["run_id"], metrics["model_sha256"] = info.run_id, file_sha256(paths.model_file)
    checks_seconds = attention_checks_seconds(cfg, test, attention, seconds / len(true))
    log.info("evaluate: %d test images at %.0f images/s; the attention checks next, %s",
             len(true), len(true) / seconds, about(checks_seconds))  # fmt: skip
    metrics["attention"], curves = attention_metrics(cfg, model, runtime, test, attention, info, predicted)
    metrics["unknown"], novelty_scores = unknown_metrics(cfg, model, runtime, info, out)

    write_json(paths.metrics / "eval.json", metrics)
    names = pd.DataFrame({"actual": [classes[i] for i in true], "predicted": [classes[i] for i in predicted]})
    with atomic_path(paths.metrics / "predictions.csv") as temporary:
        names.to_csv(temporary, index=False)
    matrix = confusion_matrix(true, predicted, labels=list(range(len(classes))))
    figures.confusion_matrix(matrix, classes, paths.plots / "confusion_matrix.png")
    figures.roc_and_precision_recall(true.numpy(), probabilities, classes, paths.plots / "roc_pr.png")
    count = min(cfg.evaluate.overlay_images, len(true))
    chosen = torch.randperm(len(true), generator=torch.Generator().manual_seed(cfg.data.seed))[:count]
    pairs = [(classes[t], classes[p]) for t, p in zip(true[chosen], predicted[chosen], strict=True)]
    shown = test.images[chosen]
    figures.attention_overlays(
        shown, attention[chosen], [f"true: {t}\npred: {p}" for t, p in pairs],
        paths.plots / "attention_overlays.png", ["green" if t == p else "red" for t, p in pairs],
        None if test.boxes is None else test.boxes[chosen], head_maps(model, shown, batch, runtime),
    )  # fmt: skip
    figures.deletion_curves(curves, paths.plots / "deletion_curves.png", metrics["attention"])
    figures.reliability_diagram(
        {
            "calibrated": reliability(probabilities, true.numpy()),
            "before": reliability(uncalibrated.numpy(), true.numpy()),
        },
        paths.plots / "reliability.png",
    )
    figures.novelty_histograms(novelty_scores, info.detector and info.detector.threshold, paths.plots / "novelty.png")
    checked, unknown = metrics["attention"], metrics["unknown"] or {"sets": {}}

    with resume_run(cfg, info.run_id):
        mlflow.log_metrics(
            {
                "test_accuracy": metrics["accuracy"],
                "test_balanced_accuracy": metrics["balanced_accuracy"],
                "test_macro_f1": metrics["macro_f1"],
                "test_ece": metrics["calibration"]["ece"],
                "test_ece_uncalibrated": metrics["calibration"]["ece_uncalibrated"],
                "test_class_ece": metrics["calibration"]["class_ece"],
                **{f"test_{key}": metrics[key] for key in ("roc_auc", "average_precision") if metrics[key] is not None},
                **{f"test_recall_{key_part(name)}": m["recall"] for name, m in metrics["per_class"].items()},
                "inference_images_per_second": metrics["inference_images_per_second"],
                **{f"test_f1_{key_part(name)}": m["f1-score"] for name, m in metrics["per_class"].items()},
                **{f"attention_{key}": checked[key] for key in checks.NEAR_EMPTY_KEYS if checked[key] is not None},
                **{f"deletion_auc_{name}": value for name, value in checked.get("deletion_auc", {}).items()},
                **{f"localisation_{key}": value for key, value in checked.get("localisation", {}).items()},
                **{f"unknown_{k}": unknown[k] for k in ("test_flagged", "auroc_min") if k in unknown},
                **{
                    f"unknown_{name}_{key}": value
                    for name, figures_ in unknown["sets"].items()
                    for key, value in figures_.items()
                },
            }
        )
        mlflow.log_artifact(str(paths.metrics / "eval.json"), "metrics")
        mlflow.log_artifact(str(paths.plots / "confusion_matrix.png"), "plots")
        mlflow.log_artifact(str(paths.plots / "roc_pr.png"), "plots")
        mlflow.log_artifact(str(paths.plots / "attention_overlays.png"), "plots")
        mlflow.log_artifact(str(paths.plots / "deletion_curves.png"), "plots")
        mlflow.log_artifact(str(paths.plots / "reliability.png"), "plots")
        mlflow.log_artifact(str(paths.plots / "novelty.png"), "plots")
    empty = (
        "mostly no uniform background: near-empty cells not measured" if checked["near_empty_cell_share"] is None else
        f"{100 * checked['near_empty_attention_mass']:.1f} % of it on near-empty cells "
        f"({100 * checked['near_empty_cell_share']:.1f} % of the cells)"
    )  # fmt: skip
    log.info(
        "evaluate: test accuracy %.4f, macro-F1 %.4f, %.0f images/s; attention %s, %s, deletion AUC (%s fill) %s "
        "(MLflow run %s)",
        metrics["accuracy"], metrics["macro_f1"], metrics["inference_images_per_second"], checked["map"], empty,
        cfg.evaluate.deletion_fill, checked.get("deletion_auc"), info.run_id,
    )  # fmt: skip
    for label, figures_ in checked.get("by_predicted_class", {}).items():
        log.info("evaluate: %d images called %s, deletion AUC %s", figures_["images"], label, figures_["deletion_auc"])
    # The class to find, where it is named, says whether the overlays can be trusted: another class may mean absence.
    verdict = checked.get("by_predicted_class", {}).get(cfg.data.positive_class, checked).get("faithfulness", "")
    if verdict.startswith("not faithful"):
        log.warning("evaluate: the attention is %s", verdict)
    if unknown["sets"]:
        log.info(
            "evaluate: unknown for %.1f %% of test images; out-of-distribution AUROC %s, flagged %s",
            100 * unknown["test_flagged"], {k: round(v["auroc"], 3) for k, v in unknown["sets"].items()},
            {k: f"{v['flagged']:.0%}" for k, v in unknown["sets"].items()},
        )  # fmt: skip
    return metrics


def main() -> None:
    run(load_config())


if __name__ == "__main__":
    run_cli(main)
