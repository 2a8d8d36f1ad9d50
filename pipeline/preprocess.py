"""Stage 2, preprocess: splits that never move, decoded once into compact uint8 tensors.

An image's split is a pure function of its content and `data.seed`
(`pipeline/data/split_rule.py`): a folder that grows, shrinks or is reordered never moves an image
between train, val and test, and copies of one image always share a split.

Writes each split to `data/processed/<split>/` (`pipeline/data/splits.py`): its images, uint8 at
the model's size, in streaming shards, in a seeded shuffled order, and a table of labels, manifest
paths and hashes and, where the source knows them, object boxes scaled with the images; and
`data/processed/meta.json` (class names, image counts, normalisation statistics of the training
split, the bit depth 16-bit images were read at: `data.bit_depth`, auto from the training split's
bright level). Images are decoded a block at a time (`BLOCK_BYTES`), so the stage's memory does
not grow with the dataset. Training then reads shards and never decodes an image again.

A dataset that grows is not written again: when a split still holds every image of the last run
(same path, content and label) and nothing that shapes the pixels changed (`recipe`: the data
params, the class list, the decoding code), its old chunks are kept as they are and only the new
images, shuffled among themselves, are decoded into new chunks after them (DVC keeps the folder
between runs: `persist` in dvc.yaml). Anything else writes the split whole.

The recipe is kept beside the folder, in `data/preprocess_recipe.json`, with a digest of the
`meta.json` it was used for, not in it: the folder's bytes depend only on the images and the params,
so a rewrite that changes no pixel (a new version of the decoding code that decodes alike) leaves
`data/processed` as it was, and DVC does not train again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.core.config import Config, load_config
from pipeline.core.errors import PipelineError, run_cli
from pipeline.core.files import file_sha256, replace_dir, write_json
from pipeline.data.images import WIDE_BITS, sample_bits
from pipeline.data.manifest import BOXES, COLUMNS, box_array, upright_size
from pipeline.data.shards import ShardWriter, link_chunks, publish
from pipeline.data.sources import load_images
from pipeline.data.split_rule import split_manifest
from pipeline.data.splits import TABLE, read_table, write_table

log = logging.getLogger(__name__)


BLOCK_BYTES = 256 * 2**20  # decoded images held at once
GREY_MODES = {"1", "L", "LA", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}  # PIL's modes of grayscale images


class ChannelStats:
    """Per-channel mean and std in [0, 1] units of N×C×H×W uint8 images added a block at a time: a
    histogram of each channel's 256 values, exact, and carried between runs in meta.json."""

    def __init__(self, channels: int) -> None:
        self.histogram = np.zeros((channels, 256), dtype=np.int64)

    def add(self, images: np.ndarray) -> None:
        for channel in range(images.shape[1]):
            self.histogram[channel] += np.bincount(images[:, channel].ravel(), minlength=256)

    def merge(self, histogram: list[list[int]]) -> None:
        self.histogram += np.asarray(histogram, dtype=np.int64)

    def result(self) -> tuple[list[float], list[float]]:
        values = np.arange(256) / 255
        count = self.histogram.sum(1)
        mean = self.histogram @ values / count
        variance = (self.histogram @ values**2 - count * mean**2) / np.maximum(1, count - 1)
        return mean.tolist(), np.sqrt(np.maximum(variance, 0)).tolist()


def bit_depth(cfg: Config, train: pd.DataFrame) -> int:
    """The bits 16-bit images are read at: `data.bit_depth`, or with `auto` the camera depth holding
    the highest bright level of the training split (each image's brightest 0.1 % of samples aside,
    so hot pixels clip instead of darkening the whole set; 16 when it has no 16-bit image)."""
    if cfg.data.bit_depth != "auto":
        return cfg.data.bit_depth
    levels = train["bright_sample"].dropna()
    bits = sample_bits(int(levels.max()) if len(levels) else None)
    if len(levels):
        log.info("preprocess: %d 16-bit images, samples up to %d (hot pixels aside): read as %d-bit "
                 "(data.bit_depth: auto)", len(levels), int(levels.max()), bits)  # fmt: skip
    return bits


def channel_count(cfg: Config, train: pd.DataFrame) -> int:
    """The channels images are read with: `data.channels`, or with `auto` 1 when every training
    image is grayscale (PIL modes 1, L, LA, I, I;16…, F) and 3 when any is in colour (RGB, RGBA,
    CMYK, a palette, …): colour photos keep their colour, grey scans train on one channel."""
    if cfg.data.channels != "auto":
        return cfg.data.channels
    modes = set(train["mode"].dropna())
    channels = 1 if modes and modes <= GREY_MODES else 3
    log.info("preprocess: training images of mode %s: %d channel(s) (data.channels: auto)",
             ", ".join(sorted(modes)), channels)  # fmt: skip
    return channels


def recipe(cfg: Config, classes: list[str], bits: int, channels: int) -> str:
    """A digest of what the stored pixels and labels depend on besides the images themselves: the
    data params that shape them, the class list, the bit depth and channels, and the code that
    decodes (this stage's and `pipeline/data`'s: any change to it writes every split again)."""
    d = cfg.data
    settings = {"classes": classes, "image_size": d.image_size, "channels": channels,
                "canvas": d.canvas, "clutter": d.clutter, "bit_depth": bits}  # fmt: skip
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=repr).encode())
    for code in [Path(__file__), *sorted((Path(__file__).parent / "data").glob("*.py"))]:
        digest.update(code.read_bytes())
    return digest.hexdigest()[:16]


def recorded_recipe(record: Path, meta_file: Path) -> str | None:
    """The recipe `record` says the processed folder was written with, if it vouches for this very
    `meta_file` (a folder put back by `dvc checkout` or by hand may be another's); else None."""
    if not (record.is_file() and meta_file.is_file()):
        return None
    try:
        written = json.loads(record.read_text())
    except json.JSONDecodeError:
        return None
    return written.get("recipe") if written.get("meta") == file_sha256(meta_file) else None


def arrange(rows: pd.DataFrame, labels: torch.Tensor, previous: Path | None) -> tuple[pd.DataFrame, torch.Tensor, int]:
    """The split's rows and labels with those already in the `previous` run's shards first, in the
    shards' order, and how many of them there are: 0 (nothing kept) when there is no previous split
    or one of its images is gone, changed or relabelled."""
    if previous is None or not (previous / TABLE).is_file():
        return rows, labels, 0
    table = read_table(previous)
    position = {key: i for i, key in enumerate(zip(rows["path"], rows["sha256"], labels.tolist(), strict=True))}
    hashes = table.get("sha256", [None] * len(table["paths"]))
    old = list(zip(table["paths"], hashes, table["labels"].tolist(), strict=True))
    if not old or any(key not in position for key in old):
        return rows, labels, 0
    first = [position[key] for key in old]
    order = first + sorted(set(range(len(rows))) - set(first))  # the new ones keep their shuffled order
    return rows.iloc[order].reset_index(drop=True), labels[order], len(first)


def write_split(
    cfg: Config,
    rows: pd.DataFrame,
    labels: torch.Tensor,
    folder: Path,
    stats: ChannelStats | None,
    previous: Path | None = None,
    bits: int = WIDE_BITS,
    channels: int = 1,
) -> int:
    """Decode the split's images a block at a time into shards at `folder`, with its table (with
    `channels`, 16-bit files read as `bits`-bit); keep the chunks of the `previous` run's split where
    all of its images are still there (`arrange`) and decode only the others. Returns how many
    images were kept."""
    d = cfg.data
    rows, labels, kept = arrange(rows, labels, previous)
    block = max(1, BLOCK_BYTES // (channels * d.image_size**2))
    if kept < len(rows):
        writer = ShardWriter(folder, after=link_chunks(previous, folder) if kept else None)
        for start in range(kept, len(rows), block):
            images = load_images(cfg, list(rows["path"].iloc[start : start + block]), bits, channels)
            writer.add(images, labels[start : start + block].tolist())
            if stats is not None:
                stats.add(images)
        writer.close()
    else:
        link_chunks(previous, folder)
    shape = [len(rows), channels, d.image_size, d.image_size]
    write_table(folder, labels, shape, list(rows["path"]), scaled_boxes(rows, d.image_size), list(rows["sha256"]))
    return kept


def scaled_boxes(rows: pd.DataFrame, size: int) -> torch.Tensor | None:
    """The rows' object boxes (x_min, y_min, x_max, y_max) in the pixels of the `size`² preprocessed
    image: N×K×4, K the most boxes of any row, NaN-padded; None when no row has one."""
    if BOXES not in rows.columns or rows[BOXES].isna().all():
        return None
    arrays = [box_array(cell) for cell in rows[BOXES]]
    boxes = np.full((len(arrays), max(len(a) for a in arrays), 4), np.nan)
    for row, array in enumerate(arrays):
        boxes[row, : len(array)] = array
    width, height = (side.astype("float64").to_numpy() for side in upright_size(rows))
    scale = size / np.stack([width, height, width, height], axis=1)
    return torch.from_numpy(boxes * scale[:, None, :]).float()


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
    missing = [column for column in COLUMNS if column not in manifest.columns]
    if missing:
        raise PipelineError(f"{manifest_path}: written by an older validate (no {missing[0]}); "
                            "run it again ('dvc repro validate')")  # fmt: skip
    classes = cfg.data.classes or sorted(manifest.loc[manifest["split"] == "train", "label"].unique())
    class_index = {name: i for i, name in enumerate(classes)}
    splits = split_manifest(manifest, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.seed)
    bits, channels = bit_depth(cfg, splits.train), channel_count(cfg, splits.train)
    meta: dict = {
        "classes": list(classes), "image_size": cfg.data.image_size, "channels": channels,
        "bit_depth": bits, "counts": {},
    }  # fmt: skip
    processed = cfg.paths.processed
    last = json.loads((processed / "meta.json").read_text()) if (processed / "meta.json").is_file() else {}
    now = recipe(cfg, list(classes), bits, channels)
    same_recipe = recorded_recipe(cfg.paths.preprocess_recipe, processed / "meta.json") == now
    with replace_dir(processed) as staging:
        for name, rows in splits.items():
            # shuffled once, seeded: streamed training reads shards in order, a window at a time
            rows = rows.sample(frac=1, random_state=cfg.data.seed).reset_index(drop=True)
            labels = torch.tensor([class_index[label] for label in rows["label"]], dtype=torch.int64)
            previous = processed / name if same_recipe else None
            stats = ChannelStats(channels) if name == "train" else None
            kept = write_split(cfg, rows, labels, staging / name, stats, previous, bits, channels)
            if stats is not None:
                if kept:
                    stats.merge(last["histogram"])  # the kept images' pixels
                meta["mean"], meta["std"] = stats.result()
                meta["histogram"] = stats.histogram.tolist()
            meta["counts"][name] = len(labels)
            log.info("preprocess: %s: %d images kept in their shards, %d decoded", name, kept, len(labels) - kept)
        if cfg.data.shards_url:
            meta["shards"] = publish_splits(staging, list(meta["counts"]), cfg.data.shards_url)
        write_json(staging / "meta.json", meta)
    write_json(cfg.paths.preprocess_recipe, {"recipe": now, "meta": file_sha256(processed / "meta.json")})
    log.info("preprocess: %s images -> %s", meta["counts"], cfg.paths.processed)
    return meta


def main() -> None:
    run(load_config())


if __name__ == "__main__":
    run_cli(main)
