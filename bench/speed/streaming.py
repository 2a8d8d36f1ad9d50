"""Streamed against in-memory training, side by side in one process: the train stage's epochs on
the same images, read from memory and from shards on local disk, alternating after a warm-up.

    python -m bench.speed.streaming [PROJECT_ROOT] [--images 12800] [--rounds 3] [--store s3://BUCKET/PREFIX]

Needs the preprocessed splits (`dvc repro preprocess`). With --store, the shards are also
published there and streamed from the object store (keys and endpoint: the AWS_* variables; e.g.
`make object-store`). Prints one JSON line: each epoch's images/s and the median ratios to
memory. Alternating in one process cancels the drift a fresh process shows over its first epochs
(allocator, CPU clock), which separate runs mix in.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from pipeline.core.config import load_config
from pipeline.data.shards import ShardedImages, publish
from pipeline.data.splits import TensorSplit, load_split, save_split
from pipeline.training.runtime import select_runtime
from pipeline.training.steps import build_training, train_epoch


def measure(root: Path, images: int, rounds: int, store: str | None = None) -> dict:
    cfg = load_config(root / "params.yaml")
    runtime = select_runtime(cfg.train.device, cfg.train.precision, backbone=cfg.model.backbone)
    processed = root / "data" / "processed"
    meta = json.loads((processed / "meta.json").read_text())
    full = load_split(processed, "train")
    memory = TensorSplit(full.images[:images].to(runtime.device), full.labels[:images].to(runtime.device))
    shards = Path(tempfile.mkdtemp(prefix="bench-streaming-"))
    save_split(shards / "train", TensorSplit(full.images[:images], full.labels[:images]))
    variants = {"memory": memory, "streamed": load_split(shards, "train", "stream")}
    if store:
        publish(shards / "train", f"{store}/train")
        variants["object_store"] = TensorSplit(ShardedImages(f"{store}/train", memory.images.shape), memory.labels)
    training = build_training(cfg, meta, runtime, full.labels.repeat(len(variants) * (rounds + 1) + 1))
    epoch = 1
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds + 1):
        for name, data in variants.items():
            rate = train_epoch(training, data, cfg.train, runtime, epoch)["images_per_second"]
            if epoch > len(variants):  # the first round warms up
                rates[name].append(round(rate))
            epoch += 1
    result = {"images": images, "runtime": runtime.name, **rates}
    for name in list(variants)[1:]:
        ratios = [rate / base for rate, base in zip(rates[name], rates["memory"], strict=True)]
        result[f"{name}_vs_memory"] = statistics.median(ratios)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.speed.streaming")
    parser.add_argument("project_root", type=Path, nargs="?", default=Path("."))
    parser.add_argument("--images", type=int, default=12800)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--store", help="also stream from this object store prefix (s3://bucket/prefix)")
    args = parser.parse_args()
    print(json.dumps(measure(args.project_root, args.images, args.rounds, args.store)))


if __name__ == "__main__":
    main()
