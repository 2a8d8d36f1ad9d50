"""Where the images come from: Debian's Fashion-MNIST IDX files or a folder of class sub-folders.

Both sources are read in place, never copied or changed. `scan` gives the per-image manifest that
the validate stage checks; `load_images` gives the accepted images as one uint8 tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.config import Config

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


def scan(cfg: Config) -> Scan:
    """The manifest of the configured source (`data.source`, `data.path`)."""
    if cfg.data.source == "fashion-mnist":
        from pipeline import fashion_mnist

        return fashion_mnist.scan(cfg.source_path())
    from pipeline import image_folder

    return image_folder.scan(cfg.source_path(), cfg.validation.max_pixels)


def load_images(cfg: Config, paths: list[str]) -> np.ndarray:
    """The images at manifest `paths` as N×C×H×W uint8, at `data.image_size` and `data.channels`."""
    size, channels = cfg.data.image_size, cfg.data.channels
    if cfg.data.source == "fashion-mnist":
        from pipeline import fashion_mnist

        return fashion_mnist.load(cfg.source_path(), paths, size, channels)
    from pipeline import image_folder

    return image_folder.load(cfg.source_path(), paths, size, channels, cfg.validation.max_pixels)
