"""The training data as an MLflow dataset: what a run's Datasets panel shows and `search_runs` can
filter on (`dataset.name`, `dataset.digest`).

Name: the data source (`fashion-mnist`, `cluttered-fashion-mnist`, or the image folder's name).
Digest: the data version, DVC's hash of `data.path` as `dvc.lock` records it. Source: a DVC source,
the path at the git commit. Schema: the manifest's columns. Profile: images per split and class.
The manifest's identity columns (path, split, label, sha256) go with the run as an artifact, so
that a later run can say what changed since (`pipeline/data/manifest_diff.py`).
"""

from __future__ import annotations

import tempfile
import warnings
from functools import cached_property
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.pandas_dataset import PandasDataset
from mlflow.types import Schema
from mlflow.types.utils import _infer_schema

from pipeline.core.config import Config
from pipeline.data.manifest_diff import IDENTITY, DataDiff, diff


class DvcSource(DatasetSource):
    """A path versioned by DVC, at a git commit."""

    def __init__(self, path: str, rev: str, md5: str):
        self.path, self.rev, self.md5 = path, rev, md5

    @staticmethod
    def _get_source_type() -> str:
        return "dvc"

    def load(self, **kwargs: Any) -> str:
        """The data itself: `dvc get . PATH --rev REV` or `dvc pull` in a clone at REV."""
        raise NotImplementedError(f"check out {self.rev} and run 'dvc pull {self.path}'")

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any) -> DvcSource:
        raise NotImplementedError

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "rev": self.rev, "md5": self.md5}

    @classmethod
    def from_dict(cls, source_dict: dict[str, str]) -> DvcSource:
        return cls(source_dict["path"], source_dict["rev"], source_dict["md5"])


class ManifestDataset(PandasDataset):
    """The validated manifest (one row per image), profiled by images per split and class."""

    SCHEMA_ROWS = 1000  # MLflow otherwise checks every value of every column: 4 s for 70,000 images

    @cached_property
    def schema(self) -> Schema | None:
        """The columns' types, read from the first rows (each column has one pandas type)."""
        return _infer_schema(self.df.head(self.SCHEMA_ROWS))

    @property
    def profile(self) -> dict:
        counts = self.df.groupby(["split", "label"]).size()
        return {
            "images": len(self.df),
            **{split: {label: int(n) for label, n in counts[split].items()} for split in counts.index.levels[0]},
        }


MANIFEST_ARTIFACT = "data/manifest.csv.gz"


def log_training_data(cfg: Config, version: str, commit: str) -> ManifestDataset:
    """Log the manifest as the active run's training dataset, and its identity columns as an artifact."""
    manifest = pd.read_csv(cfg.paths.manifest)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / Path(MANIFEST_ARTIFACT).name
        manifest[IDENTITY].to_csv(path, index=False, compression="gzip")
        mlflow.log_artifact(str(path), str(Path(MANIFEST_ARTIFACT).parent))
    dataset = ManifestDataset(
        manifest, source=DvcSource(cfg.portable_source(), commit, version), name=cfg.dataset_name(), digest=version
    )
    with warnings.catch_warnings():  # MLflow's hint that integer columns cannot hold missing values: none do
        warnings.simplefilter("ignore", UserWarning)
        mlflow.log_input(dataset, context="training")
    return dataset


def training_manifest(run_id: str) -> pd.DataFrame | None:
    """The manifest (identity columns) that run `run_id` trained on, or None if it logged none."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as folder:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=MANIFEST_ARTIFACT, dst_path=folder)
        except (MlflowException, OSError):
            return None
        return pd.read_csv(path)


def log_changes(manifest: pd.DataFrame, since_run_id: str, since: str) -> DataDiff | None:
    """Log what changed in the data since run `since_run_id` (named `since`, e.g. 'champion version 3')
    to the active run: `data/changes.json` and the `data_changes` tag. None if that run logged no manifest."""
    old = training_manifest(since_run_id)
    if old is None:
        return None
    changes = diff(old, manifest)
    mlflow.log_dict({"since": since, **changes.as_dict()}, "data/changes.json")
    mlflow.set_tag("data_changes", f"since {since}: {changes.summary()}"[:5000])
    return changes
