"""The per-image manifest of a raw dataset: one row per file, with what decoding it found."""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image

COLUMNS = [
    "path", "split", "label", "bytes", "sha256", "format",
    "width", "height", "mode", "decodable", "error",
]  # fmt: skip


@dataclass(frozen=True)
class Scan:
    """The manifest of every file, plus each (split, class) folder, so empty classes show up."""

    files: pd.DataFrame
    class_folders: list[tuple[str, str]]


def inspect_image(path: Path, root: Path) -> dict:
    """Read one file: its hash, and what fully decoding it as an image gives (or the error)."""
    relative = path.relative_to(root)
    data = path.read_bytes()
    row = {
        "path": relative.as_posix(),
        "split": relative.parts[0],
        "label": relative.parts[1],
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "format": None,
        "width": None,
        "height": None,
        "mode": None,
        "decodable": False,
        "error": None,
    }
    try:
        with Image.open(io.BytesIO(data)) as image:
            row.update(format=image.format, width=image.width, height=image.height, mode=image.mode)
            image.load()
        row["decodable"] = True
    except Exception as error:  # PIL raises many types for bad files; each is a finding, not a crash
        row["error"] = f"{type(error).__name__}: {error}".splitlines()[0][:200] or "empty file"
    return row


def _inspect_chunk(args: tuple[list[Path], Path]) -> list[dict]:
    paths, root = args
    return [inspect_image(path, root) for path in paths]


def scan_dataset(root: Path, workers: int | None = None) -> Scan:
    """Inspect every file under `root/<split>/<class>/`, in parallel processes."""
    class_folders = sorted(
        (split.name, folder.name)
        for split in root.iterdir()
        if split.is_dir()
        for folder in split.iterdir()
        if folder.is_dir()
    )
    paths = sorted(p for split, label in class_folders for p in (root / split / label).iterdir() if p.is_file())
    workers = workers or min(8, os.cpu_count() or 1)
    chunks = [(paths[i : i + 2000], root) for i in range(0, len(paths), 2000)]
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(workers) as pool:
            rows = [row for chunk in pool.map(_inspect_chunk, chunks) for row in chunk]
    else:
        rows = [row for chunk in chunks for row in _inspect_chunk(chunk)]
    files = pd.DataFrame(rows, columns=COLUMNS)
    files = files.astype({"width": "Int64", "height": "Int64", "decodable": bool})
    return Scan(files=files, class_folders=class_folders)
