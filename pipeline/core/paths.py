"""Where things live: the project root, every stage's inputs and outputs, and the MLflow store."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_EXPERIMENT_COPY = "/.dvc/tmp/exps/"


def project_root() -> Path:
    """The folder holding `params.yaml`: `$PIPELINE_ROOT`, else the nearest one up from the cwd."""
    if env := os.environ.get("PIPELINE_ROOT"):
        return Path(env).resolve()
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / "params.yaml").is_file():
            return folder
    return cwd


def store_root(root: Path) -> Path:
    """The real project root, also when DVC runs an experiment in a copy under `.dvc/tmp/exps/`.

    DVC sets `$DVC_ROOT` to the parent repository for such runs; the path is the fallback.
    """
    text = root.as_posix()
    if _EXPERIMENT_COPY not in text:
        return root
    if env := os.environ.get("DVC_ROOT"):
        return Path(env).resolve()
    return Path(text.split(_EXPERIMENT_COPY, 1)[0])


@dataclass(frozen=True)
class ProjectPaths:
    """Every stage's files, relative to one root (the names `dvc.yaml` uses)."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "data" / "manifest.csv"

    @property
    def processed(self) -> Path:
        return self.root / "data" / "processed"

    @property
    def preprocess_recipe(self) -> Path:
        return self.root / "data" / "preprocess_recipe.json"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def model_file(self) -> Path:
        return self.models / "model.pt"

    @property
    def onnx_file(self) -> Path:
        return self.models / "model.onnx"

    @property
    def quantized_onnx_file(self) -> Path:
        return self.models / "model.int8.onnx"

    @property
    def checkpoint(self) -> Path:
        return self.models / "checkpoint.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def mlflow_db(self) -> Path:
        return store_root(self.root) / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return store_root(self.root) / "mlartifacts"
