"""Stage 1, ingest: turn the configured source into the raw image dataset `data/raw/<split>/<class>/`.

`fashion-mnist` decodes Debian's IDX files into PNGs (official train/test splits kept);
`imagefolder` copies a user's `<root>/[train|test/]<class>/<image>` folder. The source is only read.
"""

from __future__ import annotations

import gzip
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from pipeline.config import Config, load_config
from pipeline.errors import PipelineError, run_cli
from pipeline.files import replace_dir

log = logging.getLogger(__name__)

FASHION_MNIST_CLASSES = [
    "T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot",
]  # fmt: skip
_FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
SPLITS = ("train", "test")


@dataclass(frozen=True)
class IngestResult:
    images: int
    classes: list[str]
    skipped: list[str]


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


def ingest_fashion_mnist(source: Path, out: Path) -> IngestResult:
    """Decode Fashion-MNIST's IDX files under `source` into PNGs under `out`."""
    missing = [n for pair in _FASHION_MNIST_FILES.values() for n in pair if not (source / n).is_file()]
    if missing:
        raise PipelineError(
            f"{source / missing[0]}: Fashion-MNIST not found; install it with "
            "'apt-get install dataset-fashion-mnist' (or run 'make setup')"
        )
    count = 0
    for split, (images_name, labels_name) in _FASHION_MNIST_FILES.items():
        images, labels = read_idx(source / images_name), read_idx(source / labels_name)
        if len(images) != len(labels):
            raise PipelineError(f"{source / labels_name}: {len(labels)} labels for {len(images)} images")
        for name in FASHION_MNIST_CLASSES:
            (out / split / name).mkdir(parents=True, exist_ok=True)
        for index, (pixels, label) in enumerate(
            tqdm(zip(images, labels, strict=True), total=len(images), desc=f"ingest {split}", disable=None)
        ):
            target = out / split / FASHION_MNIST_CLASSES[label] / f"{index:05d}.png"
            Image.fromarray(pixels, mode="L").save(target, compress_level=1)
        count += len(images)
    return IngestResult(images=count, classes=list(FASHION_MNIST_CLASSES), skipped=[])


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))


def ingest_imagefolder(source: Path, out: Path) -> IngestResult:
    """Copy a folder of class sub-folders (optionally under `train/` and `test/`) into `out`.

    Hidden files and symbolic links are not copied (links could point outside the dataset);
    they are listed in the result. Class folders are kept even when empty, so that validation
    can report them.
    """
    if not source.is_dir():
        raise PipelineError(
            f"data.path: {source} is not a folder; point data.path in params.yaml at a folder of class sub-folders"
        )
    top = _class_dirs(source)
    has_splits = bool(top) and {p.name for p in top} <= set(SPLITS) and (source / "train").is_dir()
    split_roots = {p.name: p for p in top} if has_splits else {"train": source}
    count, skipped, classes = 0, [], set()
    for split, split_root in split_roots.items():
        class_dirs = _class_dirs(split_root)
        if not class_dirs:
            raise PipelineError(f"{split_root}: no class sub-folders; expected <root>/<class>/<image>")
        for class_dir in class_dirs:
            classes.add(class_dir.name)
            target_dir = out / split / class_dir.name
            target_dir.mkdir(parents=True, exist_ok=True)
            for path in sorted(class_dir.rglob("*")):
                relative = path.relative_to(source).as_posix()
                if path.is_symlink() or any(part.startswith(".") for part in path.relative_to(class_dir).parts):
                    skipped.append(relative)
                elif path.is_file():
                    flat_name = path.relative_to(class_dir).as_posix().replace("/", "__")
                    shutil.copyfile(path, target_dir / flat_name)
                    count += 1
    for name in skipped:
        log.warning("ingest: skipped %s (hidden file or symbolic link)", name)
    return IngestResult(images=count, classes=sorted(classes), skipped=skipped)


def run(cfg: Config) -> IngestResult:
    """Build `data/raw` from the configured source, replacing it only once complete."""
    source = cfg.source_path()
    if cfg.data.source == "fashion-mnist":
        ingest = ingest_fashion_mnist
    else:
        ingest = ingest_imagefolder
    with replace_dir(cfg.paths.raw) as staging:
        result = ingest(source, staging)
    log.info("ingest: %d files, %d classes -> %s", result.images, len(result.classes), cfg.paths.raw)
    return result


def main() -> None:
    run(load_config())


if __name__ == "__main__":
    run_cli(main)
