"""The manifest: one row per image of a source (path, split, label, size, hash, how it decodes).

Built by the sources' scans, checked by the validate stage, read by preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

COLUMNS = [
    "path", "split", "label", "bytes", "sha256", "format", "width", "height",
    "mode", "frames", "exif_orientation", "decodable", "error",
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
    types = {"width": "Int64", "height": "Int64", "frames": "Int64", "exif_orientation": "Int64", "decodable": bool}
    return files.astype(types)
