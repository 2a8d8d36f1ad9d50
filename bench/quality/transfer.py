"""Transfer learning, measured: pretrained vs from-scratch on a low-data task.

    python -m bench.quality.transfer [--per-class 100] [--image-size 64] [--epochs 15] [--workdir DIR]

Fashion-MNIST with only `--per-class` training images per class (an image folder written from the
IDX files; the full 10,000-image test split), at `--image-size`, trained with the same epochs by
the project's own stages in a fresh copy of the project: EfficientNet-Lite0 from ImageNet weights
(head alone for the first 2 epochs, then all at a lower backbone rate), the same network from
scratch, and the seed CNN from scratch. Prints a markdown table; writes `bench/results/transfer.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from bench import RESULTS
from bench.default_run import copy_project, run
from pipeline.core.paths import project_root
from pipeline.data.fashion_mnist import CLASSES, read_split

PROJECT = project_root()
SOURCE = PROJECT / "data" / "fashion-mnist"
VARIANTS = {
    "efficientnet_lite0, ImageNet weights": {
        "model": {"backbone": "efficientnet_lite0", "pretrained": True, "output_stride": None},
        "train": {"freeze_epochs": 2, "backbone_lr": 0.0005},
    },
    "efficientnet_lite0, from scratch": {
        "model": {"backbone": "efficientnet_lite0", "pretrained": False, "output_stride": None}
    },
    "seed_cnn (default), from scratch": {"model": {"backbone": "seed_cnn", "pretrained": False}},
}


def write_low_data_folder(target: Path, per_class: int, seed: int = 0) -> Path:
    """`per_class` random training images per class and the whole test split, as PNG class folders."""
    rng = np.random.default_rng(seed)
    for split, limit in (("train", per_class), ("test", None)):
        images, labels = read_split(SOURCE, split)
        for label, name in enumerate(CLASSES):
            chosen = np.flatnonzero(labels == label)
            if limit:
                chosen = rng.choice(chosen, limit, replace=False)
            folder = target / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in chosen:
                Image.fromarray(images[index]).save(folder / f"{index:05d}.png")
    return target


def measure(root: Path, name: str, changes: dict, base: dict) -> dict:
    params = yaml.safe_load(yaml.safe_dump(base))
    for section, values in changes.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    seconds, _ = run(root, sys.executable, "-m", "pipeline.train")
    run(root, sys.executable, "-m", "pipeline.evaluate")
    evaluated = json.loads((root / "metrics" / "eval.json").read_text())
    return {"variant": name, "test_accuracy": evaluated["accuracy"], "macro_f1": evaluated["macro_f1"],
            "train_seconds": round(seconds, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "attention-pipeline-bench")
    args = parser.parse_args()
    root = copy_project(PROJECT, args.workdir / "transfer")
    write_low_data_folder(root / "data" / "low_data", args.per_class)
    base = yaml.safe_load((root / "params.yaml").read_text())
    base["data"].update(source="imagefolder", path="data/low_data", image_size=args.image_size, channels=1)
    base["validate"].update(min_images_per_class=min(10, args.per_class))
    base["train"].update(epochs=args.epochs, batch_size=64)
    (root / "params.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    run(root, sys.executable, "-m", "pipeline.validate")
    run(root, sys.executable, "-m", "pipeline.preprocess")
    results = [measure(root, name, changes, base) for name, changes in VARIANTS.items()]
    output = {"per_class": args.per_class, "image_size": args.image_size, "epochs": args.epochs, "results": results}
    (RESULTS / "transfer.json").write_text(json.dumps(output, indent=2) + "\n")
    print(f"Fashion-MNIST, {args.per_class} training images per class, {args.image_size}×{args.image_size}, "
          f"{args.epochs} epochs, test on 10,000 images")  # fmt: skip
    print("| model | test accuracy | macro-F1 | train stage |")
    print("|---|---|---|---|")
    for r in results:
        print(f"| {r['variant']} | {r['test_accuracy']:.4f} | {r['macro_f1']:.4f} | {r['train_seconds']} s |")


if __name__ == "__main__":
    main()
