"""Which split each image of a manifest belongs to: a pure function of its content (sha256) and
`data.seed`, so a folder that grows, shrinks or is reordered never moves an image between train,
val and test, and copies of one picture share a split. The preprocess stage splits by it; the
register stage recomputes a champion's splits by it to leave out what the champion trained on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.core.errors import PipelineError

SPLIT_RULE = "content-sha256"  # tagged on every training run (`split_rule`) whose splits this module made
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Splits:
    """Manifest rows of each split, in a stable order."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame

    def items(self) -> list[tuple[str, pd.DataFrame]]:
        return [(name, getattr(self, name)) for name in SPLIT_NAMES]


def content_fraction(hashes: pd.Series, seed: int, what: str) -> np.ndarray:
    """For each image (its content's sha256), a number in [0, 1) that depends only on that content,
    the seed and the split asked about."""
    keys = (hashlib.sha256(f"{seed}:{what}:{value}".encode()).digest()[:8] for value in hashes)
    return np.fromiter((int.from_bytes(key, "big") / 2**64 for key in keys), dtype=np.float64, count=len(hashes))


def hold_out(frame: pd.DataFrame, fraction: float, seed: int, what: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The images whose content fraction for `what` is under `fraction` are held out (so each class
    gives about `fraction` of its images); a class of two or more distinct images with none held
    gives its lowest one (with its copies). Returns (kept, held)."""
    fractions = content_fraction(frame["sha256"], seed, what)
    held = fractions < fraction
    for rows in frame.groupby("label", sort=False).indices.values():
        if not held[rows].any() and frame["sha256"].iloc[rows].nunique() > 1:
            held[rows[fractions[rows] == fractions[rows].min()]] = True
    return frame[~held], frame[held]


def split_manifest(manifest: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int) -> Splits:
    """Train/val split by content (`hold_out`); the test split is kept as given, or held out of
    train the same way if absent. Each split in path order."""
    train = manifest[manifest["split"] == "train"]
    test = manifest[manifest["split"] == "test"]
    if test.empty:
        train, test = hold_out(train, test_fraction, seed, "test")
    train, val = hold_out(train, val_fraction, seed, "val")
    if train.empty or val.empty:
        raise PipelineError(
            f"cannot split {len(train) + len(val)} training images into train and val; add images or change "
            "data.val_fraction"
        )
    return Splits(*(frame.sort_values("path") for frame in (train, val, test)))
