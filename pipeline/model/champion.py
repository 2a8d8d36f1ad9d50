"""The champion against a challenger, fairly: the champion's own model file from the registry, the
same-task check, and both models' answers on the same test images with an exact McNemar test."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from scipy.stats import binomtest

from pipeline.model.model_file import ModelInfo, load_model
from pipeline.model.network import AttentionCNN

DIFFERENT_TASK = "a different task; use another register.model_name"
CHAMPION, CHALLENGER = "champion", "challenger"  # the registry's aliases


@dataclass(frozen=True)
class Comparison:
    """Challenger and champion on the same test images (the challenger's test split)."""

    champion_version: str
    images: int
    challenger_accuracy: float
    champion_accuracy: float
    only_challenger_right: int  # discordant pairs: images one model gets right and the other wrong
    only_champion_right: int
    p_value: float  # exact McNemar test: two-sided binomial test of the discordant pairs at 1/2

    @property
    def gain(self) -> float:
        return self.challenger_accuracy - self.champion_accuracy

    def figures(self) -> dict[str, float]:
        """The numbers, under the names the version's tags and the MLflow run's metrics give them."""
        return {
            "shared_test_images": self.images,
            "challenger_shared_accuracy": self.challenger_accuracy,
            "champion_shared_accuracy": self.champion_accuracy,
            "only_challenger_right": self.only_challenger_right,
            "only_champion_right": self.only_champion_right,
            "mcnemar_p_value": self.p_value,
        }

    def summary(self) -> str:
        return (
            f"on the same {self.images} test images: {self.challenger_accuracy:.4f} vs the champion's "
            f"{self.champion_accuracy:.4f} (version {self.champion_version}); only it right on "
            f"{self.only_challenger_right}, only the champion on {self.only_champion_right}; "
            f"McNemar p = {self.p_value:.3g}"
        )


def compare(challenger_correct: np.ndarray, champion_correct: np.ndarray, champion_version: str) -> Comparison:
    """The paired comparison of two models' right (True) and wrong answers on the same images."""
    challenger_correct, champion_correct = np.asarray(challenger_correct, bool), np.asarray(champion_correct, bool)
    only_challenger = int((challenger_correct & ~champion_correct).sum())
    only_champion = int((~challenger_correct & champion_correct).sum())
    discordant = only_challenger + only_champion
    p_value = binomtest(only_challenger, discordant, 0.5).pvalue if discordant else 1.0
    return Comparison(
        champion_version, len(challenger_correct), float(challenger_correct.mean()), float(champion_correct.mean()),
        only_challenger, only_champion, float(p_value),
    )  # fmt: skip


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
    return None


def champion_model(name: str, version: str) -> tuple[AttentionCNN, ModelInfo]:
    """The model file registered with version `version` of `name`, loaded (weights only)."""
    with tempfile.TemporaryDirectory() as folder:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=folder))
        artifacts = mlflow.models.Model.load(local).flavors["python_function"]["artifacts"]
        return load_model(local / artifacts["model_file"]["path"])


def current_champion(client: MlflowClient, name: str) -> ModelVersion | None:
    """The model version aliased `champion`, or None when there is none (or no such model).

    Any other failure is raised: a registry that cannot answer must not look like one without a
    champion, or a worse model would be promoted.
    """
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as error:
        missing = error.error_code == "RESOURCE_DOES_NOT_EXIST" or (
            error.error_code == "INVALID_PARAMETER_VALUE" and "alias" in str(error) and "not found" in str(error)
        )
        if missing:
            return None
        raise
