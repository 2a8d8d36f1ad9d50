"""The train stage's step on a GPU, one speed lever at a time, all in one process.

    python -m bench.gpu.levers PROJECT_ROOT [--set KEY=VALUE ...] [--variant NAME ...] [--images N]

Each variant builds the training as the stage does (`build_training`, `train_epoch`) from the
project's params plus `--set`, then changes one thing: the batch size, the memory layout, an
unfused optimizer, or `torch.compile` in one of its modes. After warming up (cuDNN's algorithm
search, compilation, timed apart) it trains `--images` images and reports images/s. FLOPs per
training image are counted once, on the eager step. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from bench.gpu import time_to_accuracy
from flows.training import parse_overrides
from pipeline.core.config import load_config
from pipeline.data.splits import TensorSplit, load_split
from pipeline.training.runtime import Runtime, select_runtime
from pipeline.training.steps import build_training, make_schedule, peak_memory_mb, train_epoch

# name -> what it changes: train.batch_size, channels_last, a fused optimizer, torch.compile's mode (None: eager)
VARIANTS: dict[str, dict] = {
    "eager": {},
    "contiguous (NCHW)": {"channels_last": False},
    "unfused optimizer": {"fused": False},
    "batch 1024": {"batch_size": 1024},
    "batch 2048": {"batch_size": 2048},
    "compile": {"compile": "default"},
    "compile max-autotune-no-cudagraphs": {"compile": "max-autotune-no-cudagraphs"},
    "compile reduce-overhead (CUDA graphs)": {"compile": "reduce-overhead"},
}


def measure(root: Path, overrides: dict, variant: str, images: int) -> dict:
    change = VARIANTS[variant]
    base = load_config(root / "params.yaml", overrides)
    batch = change.get("batch_size", base.train.batch_size)
    cfg = load_config(root / "params.yaml", {**overrides, "train.batch_size": batch, "train.compile": False})
    selected = select_runtime(cfg.train.device, cfg.train.precision)
    runtime = Runtime(selected.device, selected.amp_dtype, change.get("channels_last", True))
    processed = root / "data" / "processed"
    meta = json.loads((processed / "meta.json").read_text())
    full = load_split(processed, "train")
    count = images - images % batch  # whole batches only: no recompilation for a short last batch
    index = torch.arange(count) % len(full.labels)
    data = TensorSplit(full.images[index].to(runtime.device), full.labels[index].to(runtime.device))
    training = build_training(cfg, meta, runtime, data.labels.repeat(10))
    if change.get("fused") is False:
        params, settings = training.model.parameters(), cfg.train
        optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay, fused=False)
        schedule = make_schedule(optimizer, settings, 10 * count)
        training = dataclasses.replace(training, optimizer=optimizer, schedule=schedule)
    if change.get("compile"):
        compiled = torch.compile(training.step_model, mode=change["compile"])
        training = dataclasses.replace(training, step_model=compiled)
    warmup = TensorSplit(data.images[: 3 * batch], data.labels[: 3 * batch])
    started = time.perf_counter()
    train_epoch(training, warmup, cfg.train, runtime, epoch=1)
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()
    warmup_seconds = time.perf_counter() - started
    timed = train_epoch(training, data, cfg.train, runtime, epoch=2)
    return {
        "variant": variant, "batch_size": batch, "channels_last": runtime.channels_last,
        "images_per_second": timed["images_per_second"], "warmup_seconds": warmup_seconds,
        "peak_memory_mb": peak_memory_mb(runtime),
    }  # fmt: skip


def flops_per_image(root: Path, overrides: dict) -> float:
    """FLOPs of one eager training step per image (`bench.gpu.time_to_accuracy`'s count)."""
    cfg = load_config(root / "params.yaml", overrides)
    runtime = select_runtime(cfg.train.device, cfg.train.precision)
    meta = json.loads((root / "data" / "processed" / "meta.json").read_text())
    full = load_split(root / "data" / "processed", "train")
    data = TensorSplit(full.images.to(runtime.device), full.labels.to(runtime.device))
    return time_to_accuracy.flops_per_image(cfg, meta, data)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu.levers", description=__doc__.splitlines()[0])
    parser.add_argument("project_root", type=Path)
    parser.add_argument("--set", dest="pairs", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--variant", action="append", choices=list(VARIANTS), help="repeatable (default: all)")
    parser.add_argument("--images", type=int, default=108_000)
    args = parser.parse_args()
    overrides = parse_overrides(args.pairs)
    result = {"overrides": overrides, "flops_per_image": flops_per_image(args.project_root, overrides), "variants": []}
    for variant in args.variant or list(VARIANTS):
        try:
            result["variants"].append(measure(args.project_root, overrides, variant, args.images))
        except Exception as error:  # a variant that fails (a compile mode, memory) is a finding
            result["variants"].append({"variant": variant, "error": f"{type(error).__name__}: {error}"[-2000:]})
        print(json.dumps(result["variants"][-1]), flush=True)
        torch._dynamo.reset()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
