"""The pipeline's own training step, exactly as the train stage runs it, on the preprocessed data.

    python -m bench.speed.training_step PROJECT_ROOT [--variant NAME] [--images N] [--count-flops]

Prints one JSON line: images/s (as `train_epoch` measures it), peak memory and, with
--count-flops, the FLOPs of one training step per image (`torch.utils.flop_counter`).

The variant `pipeline` is the train stage itself (`select_runtime` with params.yaml's device and
precision) with the images in memory; `streamed` is the same, reading them from shards on local
disk (`train.loader: stream`, written for the measured images first). The others switch its
speed-ups on one at a time, from the tutorial's settings up, for the change → effect table in
BENCHMARKS.md. Each runs in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.core.config import Config, load_config
from pipeline.data.splits import TensorSplit, load_split, save_split
from pipeline.training.runtime import Runtime, keep_freed_memory, select_runtime
from pipeline.training.steps import build_training, peak_memory_mb, train_epoch

TUTORIAL_BATCH = 64
STREAMED = "streamed"

# name -> (batch size: None = params.yaml's, channels_last, bf16 autocast, glibc allocator tuned)
LADDER = {
    "uint8 tensors in memory, batch augmentation": (TUTORIAL_BATCH, False, False, False),
    "+ channels_last": (TUTORIAL_BATCH, True, False, False),
    "+ bf16 autocast": (TUTORIAL_BATCH, True, True, False),
    "+ params.yaml batch size": (None, True, True, False),
    "+ allocator keeps freed memory": (None, True, True, True),
}


def variant_setup(cfg: Config, variant: str) -> tuple[Config, Runtime]:
    """The config and runtime of a variant; `pipeline` is exactly the train stage's."""
    if variant in ("pipeline", STREAMED):
        return cfg, select_runtime(cfg.train.device, cfg.train.precision)
    batch_size, channels_last, bf16, tuned_allocator = LADDER[variant]
    if tuned_allocator:
        keep_freed_memory()
    train = cfg.train.model_copy(update={"batch_size": batch_size or cfg.train.batch_size})
    runtime = Runtime(_device(cfg), torch.bfloat16 if bf16 else None, channels_last)
    return cfg.model_copy(update={"train": train}), runtime


def _device(cfg: Config) -> torch.device:
    cuda = cfg.train.device == "cuda" or (cfg.train.device == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if cuda else "cpu")


def measure(project_root: Path, variant: str, images: int, count_flops: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as scratch:  # the streamed variant's shards
        return _measure(project_root, variant, images, count_flops, Path(scratch))


def _measure(project_root: Path, variant: str, images: int, count_flops: bool, scratch: Path) -> dict:
    cfg = load_config(project_root / "params.yaml")
    cfg, runtime = variant_setup(cfg, variant)
    processed = project_root / "data" / "processed"
    meta = json.loads((processed / "meta.json").read_text())
    full = load_split(processed, "train")
    data = TensorSplit(full.images[:images].to(runtime.device), full.labels[:images].to(runtime.device))
    if variant == STREAMED:
        save_split(scratch / "train", TensorSplit(full.images[:images], full.labels[:images]))
        data = load_split(scratch, "train", "stream")
    batch = cfg.train.batch_size
    measured_images = (1 + 3) * batch + len(data.labels)  # the schedule must cover every measured step
    training = build_training(cfg, meta, runtime, full.labels.repeat(-(-measured_images // len(full.labels))))
    result: dict = {"variant": variant, "runtime": runtime.name, "batch_size": batch}
    one_batch = TensorSplit(full.images[:batch].to(runtime.device), full.labels[:batch].to(runtime.device))
    if count_flops:
        with FlopCounterMode(display=False) as counter:
            train_epoch(training, one_batch, cfg.train, runtime, epoch=1)
        result["flops_per_image"] = counter.get_total_flops() / batch
    warmup = TensorSplit(full.images[: 3 * batch].to(runtime.device), full.labels[: 3 * batch].to(runtime.device))
    train_epoch(training, warmup, cfg.train, runtime, epoch=1)
    timed = train_epoch(training, data, cfg.train, runtime, epoch=2)
    result["images_per_second"] = timed["images_per_second"]
    result["peak_memory_mb"] = peak_memory_mb(runtime)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.speed.training_step")
    parser.add_argument("project_root", type=Path)
    parser.add_argument("--variant", default="pipeline", choices=["pipeline", STREAMED, *LADDER])
    parser.add_argument("--images", type=int, default=12800)
    parser.add_argument("--count-flops", action="store_true")
    args = parser.parse_args()
    print(json.dumps(measure(args.project_root, args.variant, args.images, args.count_flops)))


if __name__ == "__main__":
    main()
