"""Fashion-MNIST as Debian's `dataset-fashion-mnist` installs it: four gzipped IDX files.

The images are read straight from the IDX files (no PNG round trip): a manifest row per image,
named `<images file>#<index>`, whose sha256 is that of its 784 pixel bytes.
"""

from __future__ import annotations

import gzip
import hashlib
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.core.errors import PipelineError
from pipeline.data.manifest import Scan, manifest_frame

CLASSES = [
    "T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot",
]  # fmt: skip
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file of unsigned bytes into an array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise PipelineError(f"{path}: unreadable IDX file ({error}); reinstall the dataset") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise PipelineError(f"{path}: not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise PipelineError(f"{path}: truncated IDX file ({body.size} of {np.prod(shape)} bytes)")
    return body.reshape(shape)


@cache
def read_split(source: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N×28×28 uint8) and labels (N) of the `train` or `test` split."""
    missing = [name for pair in FILES.values() for name in pair if not (source / name).is_file()]
    if missing:
        raise PipelineError(
            f"{source / missing[0]}: Fashion-MNIST not found; install it with "
            "'apt-get install dataset-fashion-mnist' (or run 'make setup'), or set data.path"
        )
    images_name, labels_name = FILES[split]
    images, labels = read_idx(source / images_name), read_idx(source / labels_name)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise PipelineError(f"{source / labels_name}: {len(labels)} labels for {len(images)} images")
    if labels.max(initial=0) >= len(CLASSES):
        raise PipelineError(f"{source / labels_name}: label {labels.max()} outside the {len(CLASSES)} classes")
    return images, labels


def scan(source: Path) -> Scan:
    """The manifest of both splits: one row per image, all decodable 28×28 grayscale."""
    rows = []
    for split, (images_name, _) in FILES.items():
        images, labels = read_split(source, split)
        _, height, width = images.shape
        for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
            rows.append({
                "path": f"{images_name}#{index:05d}", "split": split, "label": CLASSES[label],
                "bytes": pixels.nbytes, "sha256": hashlib.sha256(pixels.tobytes()).hexdigest(), "format": "IDX",
                "width": width, "height": height, "mode": "L", "frames": 1, "exif_orientation": 1,
                "decodable": True, "error": None,
            })  # fmt: skip
    folders = [(split, name) for split in FILES for name in CLASSES]
    return Scan(files=manifest_frame(rows), class_folders=folders)


def load(source: Path, paths: list[str], size: int, channels: int) -> np.ndarray:
    """The images named by manifest `paths` (in that order), as N×`channels`×`size`×`size` uint8."""
    split_of = {images_name: split for split, (images_name, _) in FILES.items()}
    names = [path.rpartition("#") for path in paths]
    unknown = [path for path, (name, _, _) in zip(paths, names, strict=True) if name not in split_of]
    if unknown:
        raise PipelineError(f"{unknown[0]}: not a Fashion-MNIST image; run the validate stage again")
    pixels = np.empty((len(paths), 28, 28), dtype=np.uint8)
    for images_name, split in split_of.items():
        positions = [i for i, (name, _, _) in enumerate(names) if name == images_name]
        if positions:
            pixels[positions] = read_split(source, split)[0][[int(names[i][2]) for i in positions]]
    return fit(pixels, size, channels)


def fit(pixels: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Gray images N×H×W as N×`channels`×`size`×`size` uint8, resized as image files are
    (pipeline.data.images.load_image)."""
    if (size, size) != pixels.shape[-2:]:
        resized = (Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR) for image in pixels)
        pixels = np.stack([np.asarray(image) for image in resized])
    return np.repeat(pixels[:, None], channels, axis=1)


def write_subset(source: Path, target: Path, train: int, test: int) -> Path:
    """The first `train` and `test` images of the Fashion-MNIST at `source`, as the same four IDX
    files in `target` (for small, fast runs: tests and benchmarks)."""
    target.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("test", test)):
        for name, header, item_bytes in zip(FILES[split], (16, 8), (28 * 28, 1), strict=True):
            data = gzip.decompress((source / name).read_bytes())
            head = bytearray(data[:header])
            head[4:8] = count.to_bytes(4, "big")
            (target / name).write_bytes(gzip.compress(bytes(head) + data[header : header + count * item_bytes]))
    return target
