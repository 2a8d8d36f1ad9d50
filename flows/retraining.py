"""The retraining flow: train again only when the data changed since the champion was trained.

The data version is DVC's hash of the source dataset (`data.path`), computed now, compared with
the `data_version` tag of the registry's current champion.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Completed, State

from flows.training import training_flow
from pipeline.core.config import load_config
from pipeline.core.paths import project_root
from pipeline.core.tracking import connect, data_version
from pipeline.register import current_champion


def champion_data_version(model_name: str) -> str | None:
    """The data version the current champion was trained on, or None without a champion."""
    from mlflow import MlflowClient

    champion = current_champion(MlflowClient(), model_name)
    return None if champion is None else champion.tags.get("data_version")


@flow(name="retraining", log_prints=True)
def retraining_flow(overrides: dict[str, Any] | None = None) -> State:
    """If the source's data version differs from the champion's, run the training flow."""
    cfg = load_config(project_root() / "params.yaml")
    current = data_version(cfg)
    connect(cfg)
    trained_on = champion_data_version(cfg.registry.model_name)
    logger = get_run_logger()
    if current == trained_on:
        logger.info("data version %s is the champion's: nothing to retrain", current)
        return Completed(message=f"no new data (data version {current})")
    logger.info("data version %s differs from the champion's (%s): retraining", current, trained_on)
    summary = training_flow(overrides)
    return Completed(message=f"retrained on new data ({current}): {summary.decision}", data=summary)
