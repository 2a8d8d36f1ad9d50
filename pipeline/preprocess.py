"""Stage 2, preprocess: splits that never move, decoded once into compact uint8 tensors.

An image's split is a pure function of its content and `data.seed`
(`pipeline/data/split_rule.py`): a folder that grows, shrinks or is reordered never moves an image
between train, val and test, and copies of one image always share a split.

Writes `data/processed/{train,val,test}.pt` (images N×C×H×W uint8, labels int64) and
`data/processed/meta.json` (class names, normalisation statistics of the training split). Where
the source knows each object's box, the splits hold it too, scaled with the images.
Training then loads tensors and never decodes an image again.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from pipeline.core.config import Config, load_config
from pipeline.core.errors import PipelineError, run_cli
from pipeline.core.files import atomic_path, replace_dir, write_json
from pipeline.data.manifest import BOX, upright_size
from pipeline.data.sources import load_images
from pipeline.data.split_rule import split_manifest

log = logging.getLogger(__name__)


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units."""
    pixels = images.float().div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    return pixels.mean(dim=1).tolist(), pixels.std(dim=1).tolist()


def scaled_boxes(rows: pd.DataFrame, size: int) -> torch.Tensor | None:
    """The rows' object boxes (x_min, y_min, x_max, y_max) in the pixels of the `size`² preprocessed
    image, NaN where a row has none; None when no row has one."""
    if not set(BOX) <= set(rows.columns) or rows[BOX].isna().all().all():
        return None
    boxes = rows[BOX].astype("float64").to_numpy()
    width, height = (side.astype("float64").to_numpy() for side in upright_size(rows))
    scale = size / np.stack([width, height, width, height], axis=1)
    return torch.from_numpy(boxes * scale).float()


def run(cfg: Config) -> dict:
    """Split the validated manifest and write each split's tensors and the metadata."""
    manifest_path = cfg.paths.manifest
    if not manifest_path.is_file():
        raise PipelineError(f"{manifest_path}: no manifest; run the validate stage first ('dvc repro validate')")
    manifest = pd.read_csv(manifest_path)
    classes = cfg.data.classes or sorted(manifest.loc[manifest["split"] == "train", "label"].unique())
    class_index = {name: i for i, name in enumerate(classes)}
    splits = split_manifest(manifest, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.seed)
    meta: dict = {
        "classes": list(classes), "image_size": cfg.data.image_size, "channels": cfg.data.channels, "counts": {},
    }  # fmt: skip
    with replace_dir(cfg.paths.processed) as staging:
        for name, rows in splits.items():
            images = torch.from_numpy(load_images(cfg, list(rows["path"])))
            labels = torch.tensor([class_index[label] for label in rows["label"]], dtype=torch.int64)
            payload = {"images": images, "labels": labels, "paths": list(rows["path"])}
            if (boxes := scaled_boxes(rows, cfg.data.image_size)) is not None:
                payload["boxes"] = boxes
            with atomic_path(staging / f"{name}.pt") as temporary:
                torch.save(payload, temporary)
            meta["counts"][name] = len(labels)
            if name == "train":
                meta["mean"], meta["std"] = channel_stats(images)
        write_json(staging / "meta.json", meta)
    log.info("preprocess: %s images -> %s", meta["counts"], cfg.paths.processed)
    return meta


def main() -> None:
    run(load_config())


if __name__ == "__main__":
    run_cli(main)
