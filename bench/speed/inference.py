"""Inference as the evaluate stage runs it: batch throughput on the test split, single-image latency.

    python -m bench.speed.inference PROJECT_ROOT

Uses `models/model.pt` when the project has one, else a freshly built model of params.yaml's
config (throughput does not depend on the weights). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from pipeline.core.config import load_config
from pipeline.data.splits import load_split
from pipeline.model.model_file import load_model
from pipeline.training.runtime import predict_batches, select_runtime
from pipeline.training.steps import build_training

SINGLE_IMAGE_CALLS = 200


def measure(project_root: Path, calls: int = SINGLE_IMAGE_CALLS) -> dict:
    cfg = load_config(project_root / "params.yaml")
    runtime = select_runtime(cfg.train.device, cfg.train.precision)
    processed = project_root / "data" / "processed"
    test = load_split(processed, "test")
    if cfg.paths.model_file.is_file():
        model = runtime.prepare(load_model(cfg.paths.model_file)[0])
    else:
        meta = json.loads((processed / "meta.json").read_text())
        model = build_training(cfg, meta, runtime, test.labels).model
    batch = cfg.evaluate.batch_size
    predict_batches(model, test.images[:batch], batch, runtime)
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        predict_batches(model, test.images, batch, runtime)
        rates.append(len(test.labels) / (time.perf_counter() - start))
    latencies = []
    for index in range(calls):
        start = time.perf_counter()
        predict_batches(model, test.images[index : index + 1], 1, runtime)
        latencies.append(time.perf_counter() - start)
    return {
        "runtime": runtime.name,
        "batch_size": batch,
        "images_per_second": statistics.median(rates),
        "single_image_ms": statistics.median(latencies) * 1000,
        "single_image_calls": calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.speed.inference")
    parser.add_argument("project_root", type=Path)
    parser.add_argument("--calls", type=int, default=SINGLE_IMAGE_CALLS, help="single-image calls timed")
    args = parser.parse_args()
    print(json.dumps(measure(args.project_root, args.calls)))


if __name__ == "__main__":
    main()
