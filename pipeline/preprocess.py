"""Stage 2, preprocess: splits that never move, decoded once into compact uint8 tensors.

An image's split is a pure function of its content and `data.seed`
(`pipeline/data/split_rule.py`): a folder that grows, shrinks or is reordered never moves an image
between train, val and test, and copies of one image always share a split.

Writes each split to `data/processed/<split>/` (`pipeline/data/splits.py`): its images, uint8 at
the model's size, in streaming shards, in a seeded shuffled order, and a table of labels, manifest
paths and, where the source knows them, object boxes scaled with the images; and
`data/processed/meta.json` (class names, image counts, normalisation statistics of the training
split). Images are decoded a block at a time (`BLOCK_BYTES`), so the stage's memory does not grow
with the dataset. Training then reads shards and never decodes an image again.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.core.config import Config, load_config
from pipeline.core.errors import PipelineError, run_cli
from pipeline.core.files import replace_dir, write_json
from pipeline.data.manifest import BOX, upright_size
from pipeline.data.shards import ShardWriter, publish
from pipeline.data.sources import load_images
from pipeline.data.split_rule import split_manifest
from pipeline.data.splits import write_table

log = logging.getLogger(__name__)


BLOCK_BYTES = 256 * 2**20  # decoded images held at once


class ChannelStats:
    """Per-channel mean and std in [0, 1] units, accumulated over blocks of N×C×H×W uint8 images."""

    def __init__(self, channels: int) -> None:
        self.count, self.sum, self.squares = 0, np.zeros(channels), np.zeros(channels)

    def add(self, images: np.ndarray) -> None:
        pixels = images.transpose(1, 0, 2, 3).reshape(images.shape[1], -1).astype(np.float64) / 255
        self.count += pixels.shape[1]
        self.sum += pixels.sum(axis=1)
        self.squares += np.square(pixels).sum(axis=1)

    def result(self) -> tuple[list[float], list[float]]:
        mean = self.sum / self.count
        variance = (self.squares - self.count * mean**2) / max(1, self.count - 1)
        return mean.tolist(), np.sqrt(np.maximum(variance, 0)).tolist()


def write_split(
    cfg: Config, rows: pd.DataFrame, labels: torch.Tensor, folder: Path, stats: ChannelStats | None
) -> None:
    """Decode the split's images a block at a time into shards at `folder`, with its table."""
    d = cfg.data
    block = max(1, BLOCK_BYTES // (d.channels * d.image_size**2))
    writer = ShardWriter(folder)
    for start in range(0, len(rows), block):
        images = load_images(cfg, list(rows["path"].iloc[start : start + block]))
        writer.add(images, labels[start : start + block].tolist())
        if stats is not None:
            stats.add(images)
    writer.close()
    shape = [len(rows), d.channels, d.image_size, d.image_size]
    write_table(folder, labels, shape, list(rows["path"]), scaled_boxes(rows, d.image_size))


def scaled_boxes(rows: pd.DataFrame, size: int) -> torch.Tensor | None:
    """The rows' object boxes (x_min, y_min, x_max, y_max) in the pixels of the `size`² preprocessed
    image, NaN where a row has none; None when no row has one."""
    if not set(BOX) <= set(rows.columns) or rows[BOX].isna().all().all():
        return None
    boxes = rows[BOX].astype("float64").to_numpy()
    width, height = (side.astype("float64").to_numpy() for side in upright_size(rows))
    scale = size / np.stack([width, height, width, height], axis=1)
    return torch.from_numpy(boxes * scale).float()


def publish_splits(folder: Path, names: list[str], url: str) -> str:
    """Upload the splits' shards under `url`/<digest of their indexes>/<split>: a new version of the
    data lands beside the old ones, never over shards that a running job streams. Returns the URL."""
    digest = hashlib.sha256(b"".join((folder / name / "index.json").read_bytes() for name in names)).hexdigest()
    base = f"{url.rstrip('/')}/{digest[:16]}"
    for name in names:
        publish(folder / name, f"{base}/{name}")
    log.info("preprocess: shards published to %s", base)
    return base


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
    stats = ChannelStats(cfg.data.channels)
    with replace_dir(cfg.paths.processed) as staging:
        for name, rows in splits.items():
            # shuffled once, seeded: streamed training reads shards in order, a window at a time
            rows = rows.sample(frac=1, random_state=cfg.data.seed).reset_index(drop=True)
            labels = torch.tensor([class_index[label] for label in rows["label"]], dtype=torch.int64)
            write_split(cfg, rows, labels, staging / name, stats if name == "train" else None)
            meta["counts"][name] = len(labels)
        meta["mean"], meta["std"] = stats.result()
        if cfg.data.shards_url:
            meta["shards"] = publish_splits(staging, list(meta["counts"]), cfg.data.shards_url)
        write_json(staging / "meta.json", meta)
    log.info("preprocess: %s images -> %s", meta["counts"], cfg.paths.processed)
    return meta


def main() -> None:
    run(load_config())


if __name__ == "__main__":
    run_cli(main)
