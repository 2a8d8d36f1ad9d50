"""Training as the train stage runs it, with the test accuracy measured after every epoch.

    python -m bench.gpu.time_to_accuracy PROJECT_ROOT [--set KEY=VALUE ...]

Prints one JSON line: per epoch the training seconds (`train_epoch`'s own clock: the first epoch
includes `torch.compile`'s compilation), images/s and test accuracy; the training seconds until
the test accuracy first reaches 94 % and 95 %; FLOPs per training image (counted on the eager
model, `torch.utils.flop_counter`); peak memory. The test evaluations are timed apart and not
counted as training.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from torch.utils.flop_counter import FlopCounterMode

from flows.training import parse_overrides
from pipeline.core.config import Config, load_config
from pipeline.data.splits import TensorSplit, load_split
from pipeline.training.runtime import select_runtime
from pipeline.training.steps import build_training, evaluate_split, peak_memory_mb, train_epoch

TARGETS = (0.94, 0.95)


def flops_per_image(cfg: Config, meta: dict, data: TensorSplit) -> float:
    """FLOPs of one eager training step (forward, backward, optimizer) per image."""
    eager = cfg.model_copy(update={"train": cfg.train.model_copy(update={"compile": False})})
    runtime = select_runtime(cfg.train.device, cfg.train.precision)
    training = build_training(eager, meta, runtime, data.labels)
    batch = TensorSplit(data.images[: cfg.train.batch_size], data.labels[: cfg.train.batch_size])
    with FlopCounterMode(display=False) as counter:
        train_epoch(training, batch, eager.train, runtime, epoch=1)
    return counter.get_total_flops() / len(batch.labels)


def measure(root: Path, overrides: dict) -> dict:
    cfg = load_config(root / "params.yaml", overrides)
    processed = root / "data" / "processed"
    meta = json.loads((processed / "meta.json").read_text())
    runtime = select_runtime(cfg.train.device, cfg.train.precision)
    full = load_split(processed, "train")
    train = TensorSplit(full.images.to(runtime.device), full.labels.to(runtime.device))
    test = load_split(processed, "test")
    flops = flops_per_image(cfg, meta, train)
    training = build_training(cfg, meta, runtime, train.labels)
    epochs, trained = [], 0.0
    for epoch in range(1, training.plan.epochs + 1):
        row = train_epoch(training, train, cfg.train, runtime, epoch)
        trained += row["seconds"]
        started = time.perf_counter()
        _, accuracy = evaluate_split(training, test, runtime)
        epochs.append({
            "epoch": epoch, "seconds": row["seconds"], "images_per_second": row["images_per_second"],
            "test_accuracy": accuracy, "test_seconds": time.perf_counter() - started, "training_seconds": trained,
        })  # fmt: skip
    steady = [row["images_per_second"] for row in epochs[1:]] or [epochs[0]["images_per_second"]]
    reached = {
        f"seconds_to_{round(target * 100)}": next(
            (row["training_seconds"] for row in epochs if row["test_accuracy"] >= target), None
        )
        for target in TARGETS
    }
    return {
        "overrides": overrides,
        "widths": cfg.model.widths,
        "convs_per_block": cfg.model.convs_per_block,
        "batch_size": training.plan.batch_size,
        "runtime": runtime.name,
        "compile": cfg.train.compile,
        "epochs": epochs,
        "test_accuracy": epochs[-1]["test_accuracy"],
        "training_seconds": trained,
        "first_epoch_seconds": epochs[0]["seconds"],
        "images_per_second": statistics.median(steady),  # after the first epoch (compilation, cuDNN timing)
        "flops_per_image": flops,
        "peak_memory_mb": peak_memory_mb(runtime),
        **reached,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu.time_to_accuracy")
    parser.add_argument("project_root", type=Path)
    parser.add_argument("--set", dest="pairs", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    print(json.dumps(measure(args.project_root, parse_overrides(args.pairs))))


if __name__ == "__main__":
    main()
