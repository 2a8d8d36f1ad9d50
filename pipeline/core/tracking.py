"""MLflow set-up shared by the stages: one store at the real project root, checked before work starts."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from pipeline.core.config import Config
from pipeline.core.errors import PipelineError, ServiceError, first_line
from pipeline.core.locks import file_lock


def key_part(name: str) -> str:
    """`name` (a class folder's) as part of an MLflow metric or param key, which take letters, digits
    and `_ - . : /` and spaces only: any other character ('&', parentheses, '+', ',') becomes '_'."""
    return re.sub(r"[^\w\-.:/ ]", "_", name)


def tracking_uri(cfg: Config) -> str:
    """`$MLFLOW_TRACKING_URI`, else SQLite `mlflow.db` at the real project root (absolute)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{cfg.paths.mlflow_db}"


def check_server(uri: str, timeout: float = 5.0) -> None:
    """For a tracking server (http/https URI), one quick request to its health endpoint.

    MLflow's own client retries a refused connection for minutes; this fails in seconds, with the
    reason, before any work starts.
    """
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=timeout).raise_for_status()
    except requests.RequestException as error:
        reason = type(error).__name__
        raise ServiceError(
            f"MLflow tracking server {uri} is unreachable ({reason}); start it or fix MLFLOW_TRACKING_URI"
        ) from None


def connect(cfg: Config, experiment: str | None = None) -> str:
    """Point MLflow at the project's store and make sure the experiment exists (`tracking.experiment`,
    or `experiment`: the monitoring and tuning runs keep their own); return its id.

    Fails fast, with a PipelineError naming the URI, when the store cannot be reached.
    """
    user_uri = os.environ.get("MLFLOW_TRACKING_URI")
    user_registry = os.environ.get("MLFLOW_REGISTRY_URI")
    # the stages download a few small files (a model's description, a manifest): no progress bars in their logs
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = tracking_uri(cfg)
    check_server(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(user_registry or uri)
    # MLflow exports what it is set to; keep the variables meaning "the user chose a store"
    if not user_uri:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    if not user_registry:
        os.environ.pop("MLFLOW_REGISTRY_URI", None)
    name = experiment or cfg.tracking.experiment
    try:
        with _store_creation_lock(uri):
            experiment = mlflow.get_experiment_by_name(name)
            if experiment is not None:
                return experiment.experiment_id
            artifacts = None if user_uri else cfg.paths.mlflow_artifacts.as_uri()
            return mlflow.create_experiment(name, artifact_location=artifacts)
    except MlflowException as error:
        if "already exists" in str(error):
            return mlflow.get_experiment_by_name(name).experiment_id
        raise PipelineError(
            f"MLflow tracking store {uri} is unusable ({first_line(error)}); check MLFLOW_TRACKING_URI"
        ) from None
    except Exception as error:  # connection errors come in many types
        raise ServiceError(
            f"MLflow tracking store {uri} is unreachable ({first_line(error)}); "
            "check MLFLOW_TRACKING_URI or start the server"
        ) from None


@contextmanager
def _store_creation_lock(uri: str) -> Iterator[None]:
    """For a SQLite store, one process at a time creates or migrates it (concurrent first uses race
    on MLflow's migrations and one of them fails); other stores need no lock."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    with file_lock(Path(uri.removeprefix("sqlite:///") + ".lock")):
        yield


@contextmanager
def resume_run(cfg: Config, run_id: str | None) -> Iterator[mlflow.ActiveRun]:
    """Continue the MLflow run that trained the model (the stages after training log into it)."""
    experiment_id = connect(cfg)
    try:
        active = mlflow.start_run(run_id=run_id, experiment_id=experiment_id)
    except MlflowException:
        raise PipelineError(
            f"MLflow run {run_id} of the model is not in the store {tracking_uri(cfg)}; "
            "retrain against this store ('dvc repro -f train')"
        ) from None
    with active:
        yield active
