"""The registry's `champion` and `challenger` aliases: which version is the champion, and moving it
only from the version a decision was made against (`move_champion`). Light to import (no model, no
statistics): the retraining check, rollback and the train stage read the champion with it."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from pipeline.core.locks import file_lock

CHAMPION, CHALLENGER = "champion", "challenger"


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


def move_champion(client: MlflowClient, name: str, expected: str | None, version: str) -> bool:
    """Compare-and-set: point `champion` of `name` at `version` only if it still points at `expected`
    (None: no champion); whether it moved. The re-read and the move happen under a lock that every
    process on this machine takes for this registry, so two registrations, or a registration and a
    rollback, never both move from the same champion. Across machines sharing a tracking server the
    window is the few milliseconds between re-read and move."""
    key = hashlib.sha256(f"{mlflow.get_registry_uri()}|{name}".encode()).hexdigest()[:16]
    with file_lock(Path(tempfile.gettempdir()) / "attention-registry" / f"{key}.lock"):
        current = current_champion(client, name)
        if (str(current.version) if current else None) != expected:
            return False
        client.set_registered_model_alias(name, CHAMPION, version)
        return True
