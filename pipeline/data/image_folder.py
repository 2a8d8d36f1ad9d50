"""A user's images: `<root>/<class>/<image>`, or `<root>/{train,test}/<class>/<image>`.

Read in place, never changed. Manifest paths are relative to the root (`train/cat/1.png`, or
`cat/1.png` without split folders, which all count as train). A linked file is read as the file it
points to (DVC's `cache.type: symlink` makes every file such a link); files outside the class
folders (a README), hidden files and the files Windows leaves in folders (`Thumbs.db`,
`desktop.ini`) are not read, and the scan lists them.

An optional `<root>/boxes.csv` gives the objects' boxes for some or all images: a header
`path,x_min,y_min,x_max,y_max`, then one row per box (several rows for an image with several
objects), its image's path as in the manifest and the box in the pixels of the image as shown
(after EXIF rotation). Validation checks the rows.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.core.errors import PipelineError, first_line
from pipeline.core.memory import available_bytes
from pipeline.data.images import (
    DEFAULT_MAX_PIXELS,
    WIDE_BITS,
    bright_sample,
    check_size,
    draft_for,
    exif_orientation,
    load_image,
    normalise,
    pil_message,
)
from pipeline.data.manifest import BOXES, Scan, box_cell, manifest_frame

SPLITS = ("train", "test")
BOXES_FILE = "boxes.csv"
_BOX_HEADER = ["path", "x_min", "y_min", "x_max", "y_max"]
_CHUNK = 2000
SYSTEM_FILES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini"})  # Windows' thumbnails and folder settings
PARALLEL_BYTES = 64 * 2**20  # more bytes to read than this (or more files than _CHUNK): worth parallel processes


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))


def split_roots(root: Path) -> dict[str, Path]:
    """`{"train": root/train, "test": root/test}` when the root has split folders, else `{"train": root}`."""
    if not root.is_dir():
        raise PipelineError(
            f"data.path: {root} is not a folder; point data.path in params.yaml at a folder of class sub-folders"
        )
    top = _visible_dirs(root)
    if top and {p.name for p in top} <= set(SPLITS) and (root / "train").is_dir():
        return {p.name: p for p in top}
    return {"train": root}


def inspect_image(
    path: Path, root: Path, split: str, label: str, max_pixels: int = DEFAULT_MAX_PIXELS, at_least: int | None = None
) -> dict:  # fmt: skip
    """Read one file: its hash, and what decoding and normalising it as an image gives (or the error).

    An image whose header declares more than `max_pixels` pixels is not decoded; with `at_least`
    (the model's side) a JPEG decodes as preprocessing will decode it (`draft_for`: every byte read,
    so a cut or corrupt file still fails, at a fraction of the pixels).
    """
    try:
        data, unread = path.read_bytes(), None
    except OSError as error:  # a link to nothing, a file gone or unreadable since the listing
        data, unread = b"", f"{type(error).__name__}: {error.strerror} ({path.resolve()})"
    row = {
        "path": path.relative_to(root).as_posix(), "split": split, "label": label, "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(), "format": None, "width": None, "height": None,
        "mode": None, "frames": None, "exif_orientation": None, "bright_sample": None, "decodable": False,
        "error": None,
    }  # fmt: skip
    if unread or not data:
        row["error"] = unread or "empty file (0 bytes)"
        return row
    try:
        with Image.open(io.BytesIO(data)) as image:
            row.update(format=image.format, width=image.width, height=image.height, mode=image.mode)
            check_size(image, max_pixels)
            draft_for(image, at_least)
            image.load()  # decode fully first: reading EXIF from a broken file may hide the error
            row.update(frames=getattr(image, "n_frames", 1), exif_orientation=exif_orientation(image),
                       bright_sample=bright_sample(image))  # fmt: skip
            normalise(image, 3)
        row["decodable"] = True
    except Exception as error:  # PIL raises many types for bad files; each is a finding, not a crash
        row["error"] = f"{type(error).__name__}: {pil_message(error)}"[:200]
    return row


def _inspect_chunk(items: list[tuple[Path, str, str]], root: Path, max_pixels: int, at_least: int | None) -> list[dict]:
    return [inspect_image(path, root, split, label, max_pixels, at_least) for path, split, label in items]


def plan_workers(count: int, total_bytes: int, cores: int, room: int, max_pixels: int) -> tuple[int, int]:
    """Processes, and files per task, to read `count` files of `total_bytes`: one process for a small
    job (under `_CHUNK` files and `PARALLEL_BYTES`: starting workers would cost more than it saves);
    else one per core, at most 8 and no more than the memory `room` holds while each decodes an
    image of `max_pixels` (3 bytes a pixel, twice over), with tasks small enough to give each about 4."""
    if count <= 1 or (count <= _CHUNK and total_bytes <= PARALLEL_BYTES):
        return 1, max(1, count)
    workers = min(8, cores, max(1, room // (6 * max_pixels)))
    return workers, max(1, min(_CHUNK, math.ceil(count / (4 * workers))))


def _plan(paths: list[Path], max_pixels: int) -> tuple[int, int]:
    """`plan_workers` for these files on this machine."""
    total = sum(path.stat().st_size for path in paths if path.exists())  # a broken link: no bytes
    return plan_workers(len(paths), total, os.cpu_count() or 1, available_bytes(), max_pixels)


def scan(
    root: Path, max_pixels: int = DEFAULT_MAX_PIXELS, at_least: int | None = None, classes: list[str] | None = None
) -> Scan:  # fmt: skip
    """Inspect every image under the root's class folders (those of `classes` when given; the others
    are left out unread), in parallel processes (JPEGs decoded for a model of side `at_least`, as
    preprocessing decodes them)."""
    folders, items, left_out = [], [], []
    roots = split_roots(root)
    split_folders = roots["train"] != root
    loose = {path for folder in {root, *roots.values()} for path in folder.iterdir() if not path.is_dir()}
    ignored = sorted(path.relative_to(root).as_posix() for path in loose if path.name != BOXES_FILE)
    for split, split_root in roots.items():
        class_dirs = _visible_dirs(split_root)
        if not class_dirs:
            raise PipelineError(f"{split_root}: no class sub-folders; expected <root>/<class>/<image>")
        for class_dir in class_dirs:
            if classes is not None and class_dir.name not in classes:
                left_out.append(class_dir.relative_to(root).as_posix())
                continue
            folders.append((split, class_dir.name))
            for path in sorted(class_dir.rglob("*")):
                hidden = any(part.startswith(".") for part in path.relative_to(class_dir).parts)
                if hidden or path.name.lower() in SYSTEM_FILES:
                    ignored.append(path.relative_to(root).as_posix())
                elif path.is_file() or (path.is_symlink() and not path.exists()):  # a broken link: named, not skipped
                    items.append((path, split, class_dir.name))
    workers, per_task = _plan([path for path, _, _ in items], max_pixels)
    chunks = [items[i : i + per_task] for i in range(0, len(items), per_task)]
    inspect = partial(_inspect_chunk, root=root, max_pixels=max_pixels, at_least=at_least)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            rows = [row for chunk in pool.map(inspect, chunks) for row in chunk]
    else:
        rows = [row for chunk in chunks for row in inspect(chunk)]
    files = manifest_frame(rows)
    boxes = read_boxes(root)
    found = Scan(files=files, class_folders=folders, ignored=ignored, split_folders=split_folders, left_out=left_out)
    if boxes is None:
        return found
    boxes = boxes[~boxes["path"].map(lambda path: any(path.startswith(f"{folder}/") for folder in left_out))]
    box_rows = pd.DataFrame({
        "row": [f"line {line}: {path}" for line, path in zip(boxes.index + 2, boxes["path"], strict=True)],
        "path": boxes["path"], "image_known": boxes["path"].isin(files["path"]),
        "coordinates_numeric": boxes[_BOX_HEADER[1:]].notna().all(axis=1),
    })  # fmt: skip
    numeric = boxes[box_rows["coordinates_numeric"].to_numpy()]
    by_image = {path: box_cell(rows.to_numpy()) for path, rows in numeric.groupby("path")[_BOX_HEADER[1:]]}
    files[BOXES] = files["path"].map(by_image)
    return replace(found, box_rows=box_rows)


def read_boxes(root: Path) -> pd.DataFrame | None:
    """The rows of `<root>/boxes.csv`, if there is one: path, then x_min, y_min, x_max, y_max (NaN
    where a value is not a number; validation names those rows)."""
    path = root / BOXES_FILE
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise PipelineError(
            f"{path}: unreadable CSV ({first_line(error)}); expected the header {','.join(_BOX_HEADER)}"
        ) from None
    missing = [column for column in _BOX_HEADER if column not in frame.columns]
    if missing:
        raise PipelineError(
            f"{path}: no column {', '.join(missing)}; its first line must be the header {','.join(_BOX_HEADER)}"
        )
    paths = frame["path"].map(lambda name: Path(name.strip()).as_posix())
    numbers = frame[_BOX_HEADER[1:]].apply(pd.to_numeric, errors="coerce").astype("float64")
    return pd.concat([paths.rename("path"), numbers], axis=1)


def load(
    root: Path, paths: list[str], size: int, channels: int, max_pixels: int = DEFAULT_MAX_PIXELS, bits: int = WIDE_BITS
) -> np.ndarray:  # fmt: skip
    """Decode the images at manifest `paths` into one N×C×H×W uint8 array, in parallel processes
    (16-bit files read as `bits`-bit)."""
    if not paths:
        return np.empty((0, channels, size, size), dtype=np.uint8)
    decode = partial(load_image, size=size, channels=channels, max_pixels=max_pixels, bits=bits)
    files = [root / path for path in paths]
    workers, per_task = _plan(files, max_pixels)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            arrays = list(pool.map(decode, files, chunksize=per_task))
    else:
        arrays = [decode(path) for path in files]
    return np.stack(arrays)
