"""Shared fixtures: a small generated dataset and a project folder to run stages in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.core.config import Config, load_config
from tests.synthetic import small_params, write_dataset


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A small valid dataset with train and test splits."""
    return write_dataset(tmp_path / "images", {"train": 40, "test": 10})


@pytest.fixture
def project(tmp_path: Path, dataset: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    """A project root in a temporary folder (its own params.yaml and MLflow store) for stage calls."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(small_params(str(dataset))))
    monkeypatch.setenv("PIPELINE_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)  # MLflow exports what another test set it to
    return load_config()


MLFLOW_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME",
                    "MLFLOW_RUN_ID")  # fmt: skip


@pytest.fixture(autouse=True)
def mlflow_state_of_its_own():
    """Every test starts with MLflow as a fresh process has it. MLflow keeps the tracking and
    registry URIs and the active experiment in module globals and exports the URIs to the
    environment: in one process (a pytest-xdist worker runs many files) a stage would otherwise
    log into the store of a test that ran before."""
    import mlflow
    from mlflow.tracking import _model_registry, _tracking_service, fluent

    saved = {name: os.environ.get(name) for name in MLFLOW_VARIABLES}
    yield
    while mlflow.active_run():
        mlflow.end_run()
    _tracking_service.utils._tracking_uri = None
    _model_registry.utils._registry_uri = None
    fluent._active_experiment_id = None
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `cuda` need a CUDA device: without one they are deselected (not skipped)."""
    if torch.cuda.is_available():
        return
    deselected = [item for item in items if item.get_closest_marker("cuda")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("cuda")]
