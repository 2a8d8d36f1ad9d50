"""Training checkpoints: the state after each of the last two epochs, so that a run killed at any
moment (even mid-write, or leaving a corrupt file) resumes from the last good one, with the same
settings and code."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch

from pipeline.core.files import atomic_path
from pipeline.training.steps import Training

log = logging.getLogger(__name__)

REQUIRED = ("fingerprint", "epoch", "run_id", "history", "model", "optimizer", "schedule")


PACKAGE = Path(__file__).resolve().parents[1]  # pipeline/


def code_digest(package: Path = PACKAGE) -> str:
    """A hash of every Python source in `package`: an edit between an interrupted run and its rerun
    starts training over instead of finishing a half-trained model under other code."""
    digest = hashlib.sha256()
    for source in sorted(package.rglob("*.py")):
        digest.update(source.relative_to(package).as_posix().encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:16]


def previous(path: Path) -> Path:
    """Where the checkpoint before `path` is kept."""
    return path.with_suffix(".previous.pt")


def save_checkpoint(path: Path, state: dict) -> None:
    """Write `state` atomically as the newest checkpoint; the one it replaces becomes the previous."""
    with atomic_path(path) as temporary:
        torch.save(state, temporary)
        if path.is_file():  # rotate only once the new one is whole: no window with a single checkpoint
            os.replace(path, previous(path))


def _readable(path: Path, expected: str, training: Training) -> dict | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a partial or corrupt file comes in many types: fall back, never trust it
        log.warning("train: ignoring unreadable checkpoint %s (%s)", path, type(error).__name__)
        return None
    if not isinstance(state, dict) or any(key not in state for key in REQUIRED):
        log.warning("train: ignoring incomplete checkpoint %s", path)
        return None
    if state["fingerprint"] != expected:
        log.info("train: checkpoint %s is for other settings or code: starting over", path)
        return None
    weights = training.model.state_dict()
    if {k: tuple(v.shape) for k, v in state["model"].items()} != {k: tuple(v.shape) for k, v in weights.items()}:
        log.warning("train: ignoring checkpoint %s: its weights do not fit the model", path)
        return None
    return state


def resume(path: Path, expected: str, training: Training) -> dict | None:
    """Load the newest good checkpoint for these settings (`expected` fingerprint) into `training`;
    its state (epoch, history, MLflow run id), or None to start over."""
    for candidate in (path, previous(path)):
        state = _readable(candidate, expected, training)
        if state is not None:
            restore(state, training)
            log.info("train: resuming after epoch %d from %s", state["epoch"], candidate)
            return state
    return None


def restore(state: dict, training: Training) -> None:
    """Load a checkpoint's weights, optimizer and schedule state into `training`."""
    training.model.load_state_dict(state["model"])
    training.optimizer.load_state_dict(state["optimizer"])
    training.schedule.load_state_dict(state["schedule"])


def remove_checkpoints(path: Path) -> None:
    """Delete the checkpoints once the model is written."""
    path.unlink(missing_ok=True)
    previous(path).unlink(missing_ok=True)
