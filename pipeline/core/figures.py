"""Figures a user would rather look at than read: curves, confusion matrix, attention overlays."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from pipeline.core.files import atomic_path


def _save(figure: plt.Figure, path: Path) -> None:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)


def training_curves(history: pd.DataFrame, path: Path, kept_epoch: int) -> None:
    """Loss and accuracy per epoch, train and validation; a dashed line at the epoch the model keeps."""
    figure, (loss, accuracy) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "val"):
        loss.plot(history["epoch"], history[f"{split}_loss"], marker="o", label=split)
        accuracy.plot(history["epoch"], history[f"{split}_accuracy"], marker="o", label=split)
    loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    accuracy.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    for axis in (loss, accuracy):
        axis.axvline(kept_epoch, color="grey", linestyle="--", label=f"kept (epoch {kept_epoch})")
        axis.grid(alpha=0.3)
        axis.legend()
    _save(figure, path)


def confusion_matrix(matrix: np.ndarray, classes: list[str], path: Path) -> None:
    """The test confusion matrix with class names."""
    from sklearn.metrics import ConfusionMatrixDisplay  # only evaluate draws it; the train stage skips the import

    size = max(6, 0.6 * len(classes) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(matrix, display_labels=classes).plot(
        ax=axis, xticks_rotation=45, colorbar=False, values_format="d"
    )
    axis.set_title("Confusion matrix (test)")
    _save(figure, path)


def roc_and_precision_recall(true: np.ndarray, probabilities: np.ndarray, classes: list[str], path: Path) -> None:
    """ROC and precision-recall curves on the test split, one per class against the rest (the
    positive class's alone for a two-class task)."""
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    figure, (roc, pr) = plt.subplots(1, 2, figsize=(11, 4.5))
    shown = [1] if len(classes) == 2 else range(len(classes))
    for index in shown:
        positive, score = true == index, probabilities[:, index]
        chance = index == shown[0]
        RocCurveDisplay.from_predictions(positive, score, ax=roc, name=classes[index], plot_chance_level=chance)
        PrecisionRecallDisplay.from_predictions(positive, score, ax=pr, name=classes[index])
    roc.set(title="ROC (test)", xlabel="false positive rate", ylabel="true positive rate")
    pr.set(title="Precision-recall (test)", xlabel="recall", ylabel="precision")
    for axis in (roc, pr):
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    _save(figure, path)


def attention_overlays(
    images: torch.Tensor, attention: torch.Tensor, titles: list[str], path: Path,
    colours: list[str] | None = None, boxes: torch.Tensor | None = None, heads: torch.Tensor | None = None,
) -> None:  # fmt: skip
    """A grid of uint8 images with their attention maps upsampled and overlaid, a title on each, the
    attention peak marked (+) and, where `boxes` (N×K×4 pixels, NaN rows pad) gives them, the objects'
    boxes. With `heads` (N×heads×h×w, a model with several maps), one row per image: the map the
    model shows (their mean), then each head's own."""
    count = len(images)
    colours = colours or ["black"] * count
    # each panel: the image's index, the map over it, its title and the title's colour
    panels = [(index, attention[index], titles[index], colours[index]) for index in range(count)]
    columns = min(8, count)
    if heads is not None:
        columns = 1 + heads.shape[1]
        panels = [
            (index, level, titles[index] if k == 0 else f"head {k}", colours[index] if k == 0 else "black")
            for index in range(count)
            for k, level in enumerate([attention[index], *heads[index]])
        ]
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.0 * columns, 2.3 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, (index, level, title, colour) in zip(axes.flat, panels, strict=False):
        _overlay_panel(axis, images[index], level, None if boxes is None else boxes[index], title, colour)
    _save(figure, path)


def _overlay_panel(
    axis: plt.Axes, image: torch.Tensor, level: torch.Tensor, boxes: torch.Tensor | None, title: str, colour: str
) -> None:
    """One uint8 C×H×W image with the h×w map `level` upsampled over it, its peak (+), `boxes` (K×4, NaN rows pad)."""
    size = image.shape[-2:]
    heat = F.interpolate(level[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
    picture = image.permute(1, 2, 0).numpy()
    axis.imshow(picture.squeeze(-1) if picture.shape[-1] == 1 else picture, cmap="gray")
    axis.imshow(heat.numpy(), cmap="jet", alpha=0.45)
    rows, cols = level.shape
    peak_row, peak_col = divmod(int(level.argmax()), cols)
    scale_y, scale_x = size[0] / rows, size[1] / cols
    axis.plot((peak_col + 0.5) * scale_x - 0.5, (peak_row + 0.5) * scale_y - 0.5, "w+", markersize=9, mew=2)
    for x0, y0, x1, y1 in [] if boxes is None else boxes[~torch.isnan(boxes).any(1)].tolist():
        axis.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="lime", lw=1.5))
    axis.set_title(title, fontsize=7, color=colour)


LABELS = {"gradcam": "Grad-CAM"}


def reliability_diagram(bins: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    """Accuracy against confidence per bin, one line per set of probabilities; the diagonal is perfect."""
    figure, axes = plt.subplots(figsize=(4.4, 4))
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for name, figures_ in bins.items():
        seen = figures_["share"] > 0
        axes.plot(figures_["confidence"][seen], figures_["accuracy"][seen], marker="o", label=name)
    axes.set(xlabel="confidence (top class)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02))
    axes.set_title("Reliability (test)", fontsize=9)
    axes.legend(fontsize=8)
    _save(figure, path)


def deletion_curves(curves: dict[str, np.ndarray], path: Path, checked: dict | None = None) -> None:
    """The predicted class's mean probability as image regions are deleted, one line per order; from
    the evaluate stage's attention figures (`checked`), each order's area under the curve and the
    verdict (`attention_checks.faithfulness`) under the title."""
    checked = checked or {}
    figure, axes = plt.subplots(figsize=(5.4, 3.9))
    for name, curve in curves.items():
        label = f"{LABELS.get(name, name)} order"
        if name in checked.get("deletion_auc", {}):
            label += f": AUC {checked['deletion_auc'][name]:.3f}"
        axes.plot(np.linspace(0, 100, len(curve)), curve, marker=".", label=label)
    axes.set(xlabel="% of attention cells deleted", ylabel="probability of the predicted class", ylim=(0, 1.02))
    title = "Deletion: lower means the prediction rests on those regions"
    if checked.get("faithfulness"):
        title += "\n" + textwrap.fill(checked["faithfulness"].split(";")[0], 95)
    axes.set_title(title, fontsize=8)
    if curves:
        axes.legend()
    else:
        axes.text(0.5, 0.5, "evaluate.faithfulness_images: 0", ha="center", transform=axes.transAxes)
    _save(figure, path)


def novelty_histograms(scores: dict[str, np.ndarray], threshold: float | None, path: Path) -> None:
    """Histograms of the novelty score: the test images beside each out-of-distribution set, with the
    threshold beyond which the model answers "unknown"."""
    figure, axes = plt.subplots(figsize=(6, 3.6))
    if scores:
        edges = np.histogram_bin_edges(np.concatenate(list(scores.values())), bins=60)
        for name, values in scores.items():
            axes.hist(values, bins=edges, density=True, histtype="step" if name != "test" else "stepfilled",
                      alpha=0.35 if name == "test" else 0.9, label=name, linewidth=1.3)  # fmt: skip
        if threshold is not None:
            axes.axvline(threshold, color="black", linestyle="--", linewidth=1, label="threshold")
        axes.legend(fontsize=7, ncols=2)
    else:
        axes.text(0.5, 0.5, "no detector (train.unknown.accept: null)", ha="center", transform=axes.transAxes)
    axes.set(xlabel="novelty (cosine distance to the k-th nearest training image)", ylabel="density")
    axes.set_title('Beyond the dashed line the model answers "unknown"', fontsize=9)
    _save(figure, path)
