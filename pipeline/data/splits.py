"""The preprocessed splits: written by the preprocess stage, read by training, evaluation and registration.

`data/processed/<split>/` holds the split's images in streaming shards (`pipeline/data/shards.py`)
and `table.pt`: its labels, each image's manifest path and content hash and, where known, its
object box, in the shards' order. A split is read whole into memory when it fits (`fits_in_memory`), else its images
are read from the shards as they are used: from the object store when preprocess published them
there (`data.shards_url`; `meta.json` names where), else from the local folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from pipeline.core.errors import PipelineError
from pipeline.core.memory import fits_in_memory
from pipeline.data.shards import ShardedImages, ShardWriter, read_all

TABLE = "table.pt"
META_KEYS = ("classes", "image_size", "channels", "mean", "std", "bit_depth")  # what training reads from meta.json
Loading = Literal["auto", "memory", "stream"]


@dataclass(frozen=True)
class TensorSplit:
    images: torch.Tensor | ShardedImages  # N×C×H×W uint8: in memory, or read from the shards on demand
    labels: torch.Tensor  # N int64
    boxes: torch.Tensor | None = None  # N×K×4 float (x_min, y_min, x_max, y_max in pixels; NaN rows pad), where known
    paths: list[str] | None = None  # each image's manifest path

    @property
    def streamed(self) -> bool:
        return isinstance(self.images, ShardedImages)

    def subset(self, index: torch.Tensor) -> TensorSplit:
        """The images at `index` (indices or a boolean mask) with their labels, boxes and paths; a
        streamed split stays streamed (a view read on demand)."""
        index = torch.as_tensor(index)
        rows = torch.nonzero(index)[:, 0] if index.dtype == torch.bool else index
        images = self.images.subset(rows) if self.streamed else self.images[rows.to(self.images.device)]
        boxes = None if self.boxes is None else self.boxes[rows]
        paths = None if self.paths is None else [self.paths[i] for i in rows.tolist()]
        return TensorSplit(images, self.labels[rows.to(self.labels.device)], boxes, paths)


def write_table(
    folder: Path,
    labels: torch.Tensor,
    shape: list[int],
    paths: list[str],
    boxes: torch.Tensor | None = None,
    sha256: list[str] | None = None,
) -> None:
    """The split's table beside its shards (written after them: its presence marks a whole split)."""
    table = {"labels": labels, "paths": paths, "shape": shape}
    if sha256 is not None:
        table["sha256"] = sha256
    if boxes is not None:
        table["boxes"] = boxes
    torch.save(table, folder / TABLE)


def save_split(folder: Path, split: TensorSplit) -> None:
    """Write an in-memory split as the preprocess stage does (for tools that derive one split from another)."""
    writer = ShardWriter(folder)
    writer.add(split.images.numpy(), split.labels.tolist())
    writer.close()
    paths = split.paths or [f"#{i}" for i in range(len(split.labels))]
    write_table(folder, split.labels, list(split.images.shape), paths, split.boxes)


def read_meta(processed: Path) -> dict:
    """The preprocess stage's `meta.json`; a one-line error when it is missing or older than this code."""
    path = processed / "meta.json"
    if not path.is_file():
        raise PipelineError(f"{path}: no preprocessed data; run the preprocess stage first ('dvc repro preprocess')")
    meta = json.loads(path.read_text())
    if missing := [key for key in META_KEYS if key not in meta]:
        raise PipelineError(
            f"{path}: written by an older preprocess (no {', '.join(missing)}); run it again ('dvc repro preprocess')"
        )
    return meta


def shards_location(processed: Path, name: str) -> Path | str:
    """Where split `name`'s shards are streamed from: the object store URL preprocess published
    them to, else the local folder."""
    meta = processed / "meta.json"
    published = json.loads(meta.read_text()).get("shards") if meta.is_file() else None
    return f"{published}/{name}" if published else processed / name


def read_table(folder: Path) -> dict:
    """A split's table: labels, shape, paths and, where written, sha256 and boxes."""
    return torch.load(folder / TABLE, weights_only=True)


def load_split(
    processed: Path, name: str, loading: Loading = "auto", device: torch.device | None = None
) -> TensorSplit:
    """The split `name` of the preprocessed folder: its images in memory (`memory`, or `auto` when
    they fit: in this machine's memory and, for a CUDA `device` that will hold them, in the GPU's)
    or read from its shards on demand (`stream`)."""
    folder = processed / name
    if not (folder / TABLE).is_file():
        raise PipelineError(f"{folder}: no preprocessed split; run the preprocess stage first ('dvc repro preprocess')")
    table = read_table(folder)
    shape = tuple(table["shape"])
    copies = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # data-parallel ranks on this machine each hold one
    if loading == "stream" or (loading == "auto" and not fits_in_memory(torch.Size(shape).numel(), copies, device)):
        images = ShardedImages(shards_location(processed, name), shape)
    else:
        images = read_all(folder, shape)
    return TensorSplit(images, table["labels"], table.get("boxes"), table.get("paths"))
