"""Where the images come from: Debian's Fashion-MNIST IDX files, cluttered canvases generated from
them, or a folder of class sub-folders.

Both sources are read in place, never copied or changed. `scan` gives the per-image manifest that
the validate stage checks; `load_images` gives the accepted images as one uint8 tensor.
"""

from __future__ import annotations

import numpy as np

from pipeline.core.config import Config
from pipeline.data import cluttered, fashion_mnist, image_folder
from pipeline.data.images import WIDE_BITS
from pipeline.data.manifest import Scan


def scan(cfg: Config) -> Scan:
    """The manifest of the configured source (`data.source`, `data.path`), of `data.classes` alone when given."""
    d = cfg.data
    if d.source == "fashion-mnist":
        return fashion_mnist.scan(cfg.source_path()).only(d.classes)
    if d.source == "cluttered-fashion-mnist":
        return cluttered.scan(cfg.source_path(), d.canvas, d.clutter, d.seed).only(d.classes)
    return image_folder.scan(cfg.source_path(), cfg.validate.max_pixels, at_least=d.image_size, classes=d.classes)


def load_images(cfg: Config, paths: list[str], bits: int = WIDE_BITS, channels: int = 1) -> np.ndarray:
    """The images at manifest `paths` as N×C×H×W uint8 of `channels`, at `data.image_size` (16-bit
    files read as `bits`-bit)."""
    size = cfg.data.image_size
    d = cfg.data
    if d.source == "fashion-mnist":
        return fashion_mnist.load(cfg.source_path(), paths, size, channels)
    if d.source == "cluttered-fashion-mnist":
        return cluttered.load(cfg.source_path(), paths, size, channels, d.canvas, d.clutter, d.seed)
    return image_folder.load(cfg.source_path(), paths, size, channels, cfg.validate.max_pixels, bits)
