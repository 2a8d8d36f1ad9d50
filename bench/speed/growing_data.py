"""A folder that grows: what `dvc repro` writes after 10 % more images arrive.

    python -m bench.speed.growing_data [--images 10000] [--grow 0.1] [--size 128]

Builds a git + DVC repository of the project around a generated folder of `--images` JPEG photos
(320×240, six classes, a bright object somewhere in each), runs `dvc repro preprocess`, adds
`--grow` more images (`dvc add`), and runs it again. Prints one JSON line: each run's seconds, the
shards' bytes, and of the second run the shard bytes written anew (files whose inode is new) and
kept (the old chunk files, untouched), with the DVC cache's growth.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

PROJECT = Path(__file__).resolve().parents[2]
CLASSES = ["a", "b", "c", "d", "e", "f"]


def write_images(folder: Path, count: int, seed: int) -> None:
    """`count` JPEG photos in class sub-folders of `folder`, each class a differently tinted object."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        label = index % len(CLASSES)
        pixels = rng.integers(0, 90, (240, 320, 3), dtype=np.uint8)
        top, left = rng.integers(0, 180), rng.integers(0, 260)
        pixels[top : top + 60, left : left + 60] = [(40 * label) % 256, 255 - 30 * label, 200]
        (folder / CLASSES[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / CLASSES[label] / f"{seed}-{index:06d}.jpg", quality=90)


def command(root: Path, *args: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in {"PIPELINE_ROOT", "MLFLOW_TRACKING_URI"}}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    started = time.perf_counter()
    subprocess.run(args, cwd=root, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def chunk_files(processed: Path) -> dict[int, int]:
    return {path.stat().st_ino: path.stat().st_size for path in processed.glob("*/chunk-*.bin")}


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def measure(images: int, grow: float, size: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="bench-growing-"))
    for package in ("pipeline", "flows"):
        shutil.copytree(PROJECT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(PROJECT / name, root / name)
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["data"].update(source="imagefolder", path="data/images", image_size=size, channels=3)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    write_images(root / "data" / "images", images, seed=0)
    dvc = (sys.executable, "-m", "dvc")
    command(root, "git", "init", "-q")
    command(root, *dvc, "init", "-q")
    command(root, *dvc, "add", "-q", "data/images")
    first = command(root, *dvc, "repro", "preprocess")
    processed, cache = root / "data" / "processed", root / ".dvc" / "cache"
    before, cache_before = chunk_files(processed), folder_bytes(cache)
    write_images(root / "data" / "images", round(grow * images), seed=1)
    command(root, *dvc, "add", "-q", "data/images")
    images_cache = folder_bytes(cache)
    second = command(root, *dvc, "repro", "preprocess")
    after = chunk_files(processed)
    result = {
        "images": images, "added": round(grow * images), "image_size": size,
        "first_repro_s": round(first, 1), "second_repro_s": round(second, 1),
        "shard_mb_before": round(sum(before.values()) / 2**20, 1),
        "shard_mb_after": round(sum(after.values()) / 2**20, 1),
        "shard_mb_written": round(sum(s for inode, s in after.items() if inode not in before) / 2**20, 1),
        "shard_mb_kept": round(sum(s for inode, s in after.items() if inode in before) / 2**20, 1),
        "old_chunks_kept": f"{len(set(before) & set(after))} of {len(before)}",
        "dvc_cache_growth_mb_for_processed": round((folder_bytes(cache) - images_cache) / 2**20, 1),
        "dvc_cache_mb_before": round(cache_before / 2**20, 1),
    }  # fmt: skip
    shutil.rmtree(root)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.speed.growing_data")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--grow", type=float, default=0.1, help="the share of images added")
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    print(json.dumps(measure(args.images, args.grow, args.size)))


if __name__ == "__main__":
    main()
