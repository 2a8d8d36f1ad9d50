"""The manifest: one row per image of a source (path, split, label, size, hash, how it decodes, and
the object's box where the source knows it).

Built by the sources' scans, checked by the validate stage, read by preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

BOX = ["box_x_min", "box_y_min", "box_x_max", "box_y_max"]  # the object's box in the upright image's pixels
COLUMNS = [
    "path", "split", "label", "bytes", "sha256", "format", "width", "height",
    "mode", "frames", "exif_orientation", "decodable", "error", *BOX,
]  # fmt: skip


@dataclass(frozen=True)
class Scan:
    """One manifest row per image, every (split, class) folder (so empty classes show up), what was
    left unread (hidden files, symbolic links) and, where the user gave boxes, the checks of their rows."""

    files: pd.DataFrame
    class_folders: list[tuple[str, str]]
    ignored: list[str] = field(default_factory=list)
    box_rows: pd.DataFrame | None = None  # one per boxes.csv row: row, path, image_known, coordinates_numeric


def manifest_frame(rows: list[dict]) -> pd.DataFrame:
    """Manifest rows as a frame with the manifest's columns and types."""
    files = pd.DataFrame(rows, columns=COLUMNS)
    types = {"width": "Int64", "height": "Int64", "frames": "Int64", "exif_orientation": "Int64", "decodable": bool,
             **dict.fromkeys(BOX, "Float64")}  # fmt: skip
    return files.astype(types)


def upright_size(files: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Each image's width and height as shown, after its EXIF rotation (orientations 5–8 swap them)."""
    turned = files["exif_orientation"].fillna(1).isin([5, 6, 7, 8])
    return files["width"].where(~turned, files["height"]), files["height"].where(~turned, files["width"])
