"""The manifest: one row per image of a source (path, split, label, size, hash, how it decodes, and
the object's box where the source knows it).

Built by the sources' scans, checked by the validate stage, read by preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

BOX = ["box_x_min", "box_y_min", "box_x_max", "box_y_max"]  # the object's box in the image's pixels, where known
COLUMNS = [
    "path", "split", "label", "bytes", "sha256", "format", "width", "height",
    "mode", "frames", "exif_orientation", "decodable", "error", *BOX,
]  # fmt: skip


@dataclass(frozen=True)
class Scan:
    """One manifest row per image, every (split, class) folder (so empty classes show up), and
    what was left unread (hidden files, symbolic links)."""

    files: pd.DataFrame
    class_folders: list[tuple[str, str]]
    ignored: list[str] = field(default_factory=list)


def manifest_frame(rows: list[dict]) -> pd.DataFrame:
    """Manifest rows as a frame with the manifest's columns and types."""
    files = pd.DataFrame(rows, columns=COLUMNS)
    types = {"width": "Int64", "height": "Int64", "frames": "Int64", "exif_orientation": "Int64", "decodable": bool,
             **dict.fromkeys(BOX, "Int64")}  # fmt: skip
    return files.astype(types)
