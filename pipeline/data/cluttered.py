"""Cluttered Fashion-MNIST: each item at a random place on a larger canvas among fragments of other
items, with its box known, so that a run can measure whether the attention finds the object.

Generated deterministically (`data.seed`) from Debian's Fashion-MNIST IDX files, read in place.
Item i of a split is Fashion-MNIST image i of that split, pasted at a uniformly random position on
a black `data.canvas`² canvas, with `data.clutter` random 8×8 fragments of other items of the same
split laid at random places (so train and test never share pixels), as DeepMind's cluttered-MNIST
generator does. Manifest rows are `cluttered-<split>#<index>`; the box is the item's foreground
(its non-zero pixels) on the canvas, x_min ≤ x < x_max, y_min ≤ y < y_max.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.data.fashion_mnist import CLASSES, FILES, fit, read_split
from pipeline.data.manifest import Scan, box_cell, manifest_frame

ITEM, FRAGMENT = 28, 8
SPLIT_IDS = {"train": 0, "test": 1}


def generate(items: np.ndarray, index: int, split: str, canvas: int, clutter: int, seed: int) -> tuple:
    """Item `index` of `items` (N×28×28) on its cluttered canvas, and its box (x_min, y_min, x_max, y_max)."""
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
    pixels = np.zeros((canvas, canvas), dtype=np.uint8)
    for _ in range(clutter):
        other = (index + 1 + int(rng.integers(len(items) - 1))) % len(items)  # any item but this one
        fy, fx = rng.integers(0, ITEM - FRAGMENT + 1, 2)
        py, px = rng.integers(0, canvas - FRAGMENT + 1, 2)
        patch = pixels[py : py + FRAGMENT, px : px + FRAGMENT]
        np.maximum(patch, items[other, fy : fy + FRAGMENT, fx : fx + FRAGMENT], out=patch)
    y, x = (int(v) for v in rng.integers(0, canvas - ITEM + 1, 2))
    item = items[index]
    region = pixels[y : y + ITEM, x : x + ITEM]
    np.maximum(region, item, out=region)
    rows, cols = np.nonzero(item)
    if len(rows) == 0:  # a blank item: its whole square
        return pixels, (x, y, x + ITEM, y + ITEM)
    return pixels, (x + int(cols.min()), y + int(rows.min()), x + int(cols.max()) + 1, y + int(rows.max()) + 1)


def _parse(path: str) -> tuple[str, int]:
    name, _, index = path.rpartition("#")
    split = name.removeprefix("cluttered-")
    if split not in SPLIT_IDS or not name.startswith("cluttered-") or not index.isdigit():
        raise PipelineError(f"{path}: not a cluttered Fashion-MNIST item; run the validate stage again")
    return split, int(index)


def scan(source: Path, canvas: int, clutter: int, seed: int) -> Scan:
    """The manifest of both splits: one row per generated canvas, with the item's box."""
    rows = []
    for split in FILES:
        items, labels = read_split(source, split)
        for index, label in enumerate(labels):
            pixels, (x_min, y_min, x_max, y_max) = generate(items, index, split, canvas, clutter, seed)
            rows.append({
                "path": f"cluttered-{split}#{index:05d}", "split": split, "label": CLASSES[label],
                "bytes": pixels.nbytes, "sha256": hashlib.sha256(pixels.tobytes()).hexdigest(), "format": "IDX",
                "width": canvas, "height": canvas, "mode": "L", "frames": 1, "exif_orientation": 1,
                "decodable": True, "error": None,
                "boxes": box_cell(np.array([[x_min, y_min, x_max, y_max]])),
            })  # fmt: skip
    return Scan(files=manifest_frame(rows), class_folders=[(split, name) for split in FILES for name in CLASSES])


def load(source: Path, paths: list[str], size: int, channels: int, canvas: int, clutter: int, seed: int) -> np.ndarray:
    """The canvases named by manifest `paths` (in that order), as N×`channels`×`size`×`size` uint8."""
    out = np.empty((len(paths), canvas, canvas), dtype=np.uint8)
    for position, path in enumerate(paths):
        split, index = _parse(path)
        out[position] = generate(read_split(source, split)[0], index, split, canvas, clutter, seed)[0]
    return fit(out, size, channels)
