"""Memory is not the ceiling: the train stage trains an epoch on preprocessed splits several times
larger than a memory cgroup's limit, streaming them from their shards; the same run told to hold
them in memory (`train.loader: memory`, the old whole-tensor loading) is killed under that limit.

    sudo python -m bench.speed.memory_limit [--limit-mb 1200] [--ratio 3] [--size 256]

Generates the splits straight into shards, a block at a time (random RGB images of `--size` px
whose class is a bright square's quarter, `--ratio` × the limit in all), in a fresh project with a
small model; runs `python -m pipeline.train` in a memory cgroup (v1 or v2) with the limit, with
`train.loader: auto` (it chooses streaming: the data do not fit) and with `memory`. Prints one JSON
line: the data's size, each run's exit code, seconds and the cgroup's own peak memory
(`memory.max_usage_in_bytes` or `memory.peak`, not the process's ru_maxrss). Linux, as root.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from pipeline.data.images import WIDE_BITS
from pipeline.data.shards import ShardWriter
from pipeline.data.splits import write_table

PROJECT = Path(__file__).resolve().parents[2]
V1 = Path("/sys/fs/cgroup/memory")
V2 = Path("/sys/fs/cgroup")
CLASSES = ["top_left", "top_right", "bottom_left", "bottom_right"]


def cgroup_unavailable() -> str | None:
    """Why a memory cgroup cannot be made here, or None when it can."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return "memory cgroups need Linux and root"
    controllers = V2 / "cgroup.subtree_control"
    if (V1 / "memory.limit_in_bytes").exists() or (controllers.exists() and "memory" in controllers.read_text()):
        return None
    return "no writable memory cgroup controller (v1 or v2)"


@dataclass(frozen=True)
class MemoryCgroup:
    folder: Path
    v1: bool

    def peak_bytes(self) -> int:
        return int((self.folder / ("memory.max_usage_in_bytes" if self.v1 else "memory.peak")).read_text())

    def enter(self) -> None:
        """Move the calling process into the cgroup (for `preexec_fn`: the child, before exec)."""
        (self.folder / "cgroup.procs").write_text(str(os.getpid()))


@contextmanager
def memory_cgroup(limit_bytes: int) -> Iterator[MemoryCgroup]:
    """A fresh memory cgroup limited to `limit_bytes` (no swap), removed after the block."""
    v1 = (V1 / "memory.limit_in_bytes").exists()
    folder = (V1 if v1 else V2) / f"attention-pipeline-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    try:
        if v1:
            (folder / "memory.limit_in_bytes").write_text(str(limit_bytes))
        else:
            (folder / "memory.max").write_text(str(limit_bytes))
            (folder / "memory.swap.max").write_text("0")
        yield MemoryCgroup(folder, v1)
    finally:
        for _ in range(50):  # its processes have exited; the kernel may take a moment to let go
            try:
                folder.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def run_train(project: Path, cgroup: MemoryCgroup, loader: str, log: Path) -> dict:
    """`python -m pipeline.train` in the cgroup; its exit code, seconds and the cgroup's peak."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["loader"] = loader
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PIPELINE_ROOT": str(project), "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
    args = [sys.executable, "-m", "pipeline.train"]
    started = time.perf_counter()
    with log.open("w") as output:
        done = subprocess.run(args, cwd=project, env=env, stdout=output, stderr=subprocess.STDOUT,
                              preexec_fn=cgroup.enter, check=False)  # fmt: skip
    return {
        "loader": loader, "exit_code": done.returncode, "seconds": round(time.perf_counter() - started, 1),
        "peak_mb": round(cgroup.peak_bytes() / 2**20), "log_tail": log.read_text()[-1500:],
    }  # fmt: skip


def images_of(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Noise images with a bright square in the quarter each label names (N×3×size×size uint8)."""
    shape = (len(labels), 3, size, size)
    count = int(np.prod(shape))
    images = rng.bit_generator.random_raw(-(-count // 8)).view(np.uint8)[:count].reshape(shape)  # 6x rng.bytes
    images &= 127
    half, side = size // 2, size // 4
    for image, label in zip(images, labels, strict=True):
        top, left = (label // 2) * half + side // 2, (label % 2) * half + side // 2
        image[:, top : top + side, left : left + side] = 255
    return images


def write_project(root: Path, data_bytes: int, size: int, val_images: int = 64, seed: int = 0) -> Path:
    """A project whose preprocessed training split holds `data_bytes` of images, written in blocks."""
    rng = np.random.default_rng(seed)
    processed = root / "data" / "processed"
    per_image = 3 * size * size
    counts = {"train": -(-data_bytes // per_image), "val": val_images, "test": val_images}
    block = max(1, 64 * 2**20 // per_image)
    manifest = []
    for split, count in counts.items():
        labels = rng.integers(0, len(CLASSES), count)
        writer = ShardWriter(processed / split)
        for start in range(0, count, block):
            writer.add(images_of(labels[start : start + block], size, rng), labels[start : start + block].tolist())
        writer.close()
        paths = [f"{split}/{i:07d}.png" for i in range(count)]
        write_table(processed / split, torch.from_numpy(labels), [count, 3, size, size], paths)
        manifest.append(pd.DataFrame({"path": paths, "split": "test" if split == "test" else "train",
                                      "label": [CLASSES[i] for i in labels], "sha256": paths}))  # fmt: skip
    pd.concat(manifest).to_csv(root / "data" / "manifest.csv", index=False)
    meta = {"classes": CLASSES, "image_size": size, "channels": 3, "bit_depth": WIDE_BITS, "counts": counts,
            "mean": [0.35] * 3, "std": [0.25] * 3}  # fmt: skip
    (processed / "meta.json").write_text(json.dumps(meta))
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["data"].update(source="imagefolder", path=str(root / "images"), image_size=size, channels=3)
    params["model"].update(backbone="seed_cnn", pretrained=False, widths=[1], convs_per_block=1,
                           attention_dim=8, output_stride=None)  # fmt: skip
    params["train"].update(epochs=1, batch_size=128, min_steps=0, min_images=0, min_steps_per_epoch=1,
                           checkpoint_seconds=3600, device="cpu", precision="auto",
                           augment={"hflip": False, "max_shift": 0})  # fmt: skip
    params["train"]["unknown"]["bank"] = 256
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def measure(limit_mb: int, ratio: float, size: int) -> dict:
    limit = limit_mb * 2**20
    project = write_project(Path(tempfile.mkdtemp(prefix="bench-memory-")), int(ratio * limit), size)
    train_bytes = sum(f.stat().st_size for f in (project / "data" / "processed" / "train").glob("*.bin"))
    result: dict = {"limit_mb": limit_mb, "train_split_mb": round(train_bytes / 2**20), "image_size": size}
    for loader in ("auto", "memory"):
        with memory_cgroup(limit) as cgroup:
            result[loader] = run_train(project, cgroup, loader, project / f"train-{loader}.log")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.speed.memory_limit")
    parser.add_argument("--limit-mb", type=int, default=1200)
    parser.add_argument("--ratio", type=float, default=3.0, help="the training split's size over the limit")
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    if reason := cgroup_unavailable():
        sys.exit(f"error: {reason}")
    result = measure(args.limit_mb, args.ratio, args.size)
    for loader in ("auto", "memory"):
        result[loader].pop("log_tail")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
