"""The manifest: one row per image of a source (path, split, label, size, hash, how it decodes, a
16-bit image's bright level (`bright_sample`: its brightest 0.1 % of samples aside, empty for
8-bit images), and the objects' boxes where the source knows them).

Built by the sources' scans, checked by the validate stage, read by preprocessing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

BOXES = "boxes"  # the objects' boxes in the upright image's pixels: JSON [[x_min, y_min, x_max, y_max], …]; empty: none
COLUMNS = [
    "path", "split", "label", "bytes", "sha256", "format", "width", "height",
    "mode", "frames", "exif_orientation", "bright_sample", "decodable", "error", BOXES,
]  # fmt: skip


@dataclass(frozen=True)
class Scan:
    """One manifest row per image, every (split, class) folder (so empty classes show up), what was
    left unread (files outside the class folders, hidden files, Windows' `Thumbs.db`; class folders
    outside `data.classes`) and, where the user gave boxes, the checks of their rows."""

    files: pd.DataFrame
    class_folders: list[tuple[str, str]]
    ignored: list[str] = field(default_factory=list)
    box_rows: pd.DataFrame | None = None  # one per boxes.csv row: row, path, image_known, coordinates_numeric
    split_folders: bool = True  # False: a folder of class folders, all train, named without a split
    left_out: list[str] = field(default_factory=list)  # class folders outside `data.classes`, unread

    def folder_name(self, split: str, label: str) -> str:
        """A class folder as the user sees it: `train/cat`, or `cat` without split folders."""
        return f"{split}/{label}" if self.split_folders else label

    def only(self, classes: list[str] | None) -> Scan:
        """The scan of these classes' folders alone (all of them for None); the others left out."""
        if classes is None:
            return self
        kept = set(classes)
        dropped = [(split, label) for split, label in self.class_folders if label not in kept]
        return replace(
            self,
            files=self.files[self.files["label"].isin(kept)].reset_index(drop=True),
            class_folders=[folder for folder in self.class_folders if folder[1] in kept],
            left_out=sorted([*self.left_out, *(self.folder_name(split, label) for split, label in dropped)]),
        )


def manifest_frame(rows: list[dict]) -> pd.DataFrame:
    """Manifest rows as a frame with the manifest's columns and types."""
    files = pd.DataFrame(rows, columns=COLUMNS)
    types = {"width": "Int64", "height": "Int64", "frames": "Int64", "exif_orientation": "Int64",
             "bright_sample": "Int64", "decodable": bool}  # fmt: skip
    return files.astype(types)


def box_cell(boxes: np.ndarray) -> str | None:
    """A `boxes` cell for k×4 boxes (None for none)."""
    return json.dumps(np.asarray(boxes, dtype="float64").reshape(-1, 4).tolist()) if len(boxes) else None


def box_array(cell: object) -> np.ndarray:
    """A `boxes` cell as a k×4 float array (0×4 where the image has none)."""
    if not isinstance(cell, str) or not cell:
        return np.zeros((0, 4))
    return np.asarray(json.loads(cell), dtype="float64").reshape(-1, 4)


def upright_size(files: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Each image's width and height as shown, after its EXIF rotation (orientations 5–8 swap them)."""
    turned = files["exif_orientation"].fillna(1).isin([5, 6, 7, 8])
    return files["width"].where(~turned, files["height"]), files["height"].where(~turned, files["width"])
