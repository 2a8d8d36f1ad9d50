"""The preprocessed splits: written by the preprocess stage, read by training, evaluation and registration."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.core.errors import PipelineError


@dataclass(frozen=True)
class TensorSplit:
    images: torch.Tensor  # N×C×H×W uint8
    labels: torch.Tensor  # N int64
    boxes: torch.Tensor | None = None  # N×4 float (x_min, y_min, x_max, y_max in pixels, NaN: none), where known
    paths: list[str] | None = None  # each image's manifest path


def load_split(path: Path) -> TensorSplit:
    """One preprocessed split, loaded safely (tensors only)."""
    if not path.is_file():
        raise PipelineError(f"{path}: no preprocessed split; run the preprocess stage first ('dvc repro preprocess')")
    payload = torch.load(path, weights_only=True)
    return TensorSplit(payload["images"], payload["labels"], payload.get("boxes"), payload.get("paths"))
