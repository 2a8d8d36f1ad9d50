"""The champion against a challenger, fairly: the champion's own model file from the registry, the
same-task check, and both models' answers on the same test images with an exact McNemar test."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, f1_score

from pipeline.model.model_file import ModelInfo, load_model
from pipeline.model.network import AttentionCNN

DIFFERENT_TASK = "a different task; use another register.model_name"


def balanced_accuracy(true: np.ndarray, predicted: np.ndarray) -> float:
    """The mean recall over the classes `true` holds: scikit-learn's `balanced_accuracy_score`, in
    bincounts (the permutation test scores 2 × 999 answer sets: 0.1 s instead of 3 s at 10,000 images)."""
    counts = np.bincount(true)
    hits = np.bincount(true[true == predicted], minlength=len(counts))
    present = counts > 0
    return float((hits[present] / counts[present]).mean())


METRICS = {  # what `register.metric` may name: the score the gain is measured in
    "accuracy": accuracy_score,
    "balanced_accuracy": balanced_accuracy,
    "macro_f1": lambda true, predicted: f1_score(true, predicted, average="macro", zero_division=0),
}


@dataclass(frozen=True)
class Comparison:
    """Challenger and champion on the same test images (the challenger's test split)."""

    champion_version: str
    images: int
    metric: str  # register.metric: the score the gain is measured in
    challenger_score: float
    champion_score: float
    challenger_accuracy: float
    champion_accuracy: float
    only_challenger_right: int  # discordant pairs: images one model gets right and the other wrong
    only_champion_right: int
    p_value: float
    test: str  # what gave p: "McNemar" (exact, for accuracy) or "permutation" (paired, of another metric)
    left_out: int | None = None  # test images left out because the champion trained on them (None: unknown)

    @property
    def gain(self) -> float:
        return self.challenger_score - self.champion_score

    def figures(self) -> dict[str, float]:
        """The numbers, under the names the version's tags and the MLflow run's metrics give them."""
        scores = {
            f"challenger_shared_{self.metric}": self.challenger_score,
            f"champion_shared_{self.metric}": self.champion_score,
        }
        return {
            "shared_test_images": self.images,
            **({"left_out_test_images": self.left_out} if self.left_out is not None else {}),
            "challenger_shared_accuracy": self.challenger_accuracy,
            "champion_shared_accuracy": self.champion_accuracy,
            **scores,
            "only_challenger_right": self.only_challenger_right,
            "only_champion_right": self.only_champion_right,
            f"{self.test.lower()}_p_value": self.p_value,
        }

    def summary(self) -> str:
        return (
            f"on the same {self.images} test images: {self.metric} {self.challenger_score:.4f} vs the champion's "
            f"{self.champion_score:.4f} (version {self.champion_version}); only it right on "
            f"{self.only_challenger_right}, only the champion on {self.only_champion_right}; "
            f"{self.test} p = {self.p_value:.3g}"
            + ("" if not self.left_out else f"; {self.left_out} test images left out: the champion trained on them")
        )


def compare(
    true: np.ndarray, challenger: np.ndarray, champion: np.ndarray, champion_version: str, metric: str = "accuracy"
) -> Comparison:
    """The paired comparison of two models' predicted classes on the same images of classes `true`:
    `metric` for each; for accuracy McNemar's exact test of the images only one of them gets right,
    for another metric a paired permutation test of it."""
    true, challenger, champion = (np.asarray(a) for a in (true, challenger, champion))
    challenger_correct, champion_correct = challenger == true, champion == true
    only_challenger = int((challenger_correct & ~champion_correct).sum())
    only_champion = int((~challenger_correct & champion_correct).sum())
    discordant = only_challenger + only_champion
    score = METRICS[metric]
    if metric == "accuracy":
        test, p_value = "McNemar", binomtest(only_challenger, discordant, 0.5).pvalue if discordant else 1.0
    else:
        test, p_value = "permutation", permutation_p_value(true, challenger, champion, score)
    return Comparison(
        champion_version, len(true), metric, float(score(true, challenger)), float(score(true, champion)),
        float(challenger_correct.mean()), float(champion_correct.mean()), only_challenger, only_champion,
        float(p_value), test,
    )  # fmt: skip


def permutation_p_value(true: np.ndarray, first: np.ndarray, second: np.ndarray, score, rounds: int = 999) -> float:
    """Two-sided paired permutation test (approximate randomisation): how often swapping the two
    models' answers on random images gives a difference in `score` at least as large as theirs."""
    observed = abs(score(true, first) - score(true, second))
    differ = first != second
    if not differ.any():
        return 1.0
    rng = np.random.default_rng(0)
    as_large = 0
    for _ in range(rounds):
        swap = differ & (rng.random(len(true)) < 0.5)
        a, b = np.where(swap, second, first), np.where(swap, first, second)
        as_large += abs(score(true, a) - score(true, b)) >= observed - 1e-12
    return (as_large + 1) / (rounds + 1)


def task_difference(challenger: ModelInfo, champion: ModelInfo) -> str | None:
    """Why the challenger cannot take the champion's place (another task, another input), or None."""
    if list(challenger.classes) != list(champion.classes):
        return f"class set differs from the champion's: {DIFFERENT_TASK}"
    if challenger.channels != champion.channels:
        channels = f"{challenger.channels} vs {champion.channels}"
        return f"input channels differ from the champion's ({channels}): {DIFFERENT_TASK}"
    if challenger.image_size != champion.image_size:
        return (
            f"image size differs from the champion's ({challenger.image_size} vs {champion.image_size} px): "
            f"{DIFFERENT_TASK}"
        )
    if challenger.bit_depth != champion.bit_depth:
        bits = f"{challenger.bit_depth} vs {champion.bit_depth}"
        return f"16-bit images are read at another bit depth than the champion's ({bits}): {DIFFERENT_TASK}"
    return None


def champion_model(name: str, version: str) -> tuple[AttentionCNN, ModelInfo]:
    """The model file registered with version `version` of `name`, loaded (weights only): only its
    MLmodel and that file are downloaded, not the ONNX file and the code beside them."""
    source = f"models:/{name}/{version}"
    with tempfile.TemporaryDirectory() as folder:
        described = mlflow.artifacts.download_artifacts(artifact_uri=f"{source}/MLmodel", dst_path=folder)
        path = mlflow.models.Model.load(described).flavors["python_function"]["artifacts"]["model_file"]["path"]
        return load_model(Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{source}/{path}", dst_path=folder)))


def seen_by(client: MlflowClient, run_id: str) -> set[str] | None:
    """The sha256 of every image run `run_id` trained or validated on: its logged manifest, split as
    that run split it. None when unknown (a run from before content splits, or without a manifest)."""
    from pipeline.data.mlflow_dataset import training_manifest
    from pipeline.data.split_rule import SPLIT_RULE, split_manifest

    run = client.get_run(run_id)
    manifest = training_manifest(run_id) if run.data.tags.get("split_rule") == SPLIT_RULE else None
    if manifest is None:
        return None
    params = run.data.params
    splits = split_manifest(
        manifest, float(params["data.val_fraction"]), float(params["data.test_fraction"]), int(params["data.seed"])
    )
    return set(splits.train["sha256"]) | set(splits.val["sha256"])
