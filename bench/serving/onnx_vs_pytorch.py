"""ONNX vs PyTorch on the CPU: batch throughput and single-image latency of the same model.

    python -m bench.serving.onnx_vs_pytorch [--root DIR]    (a project that has run train and export; default: this one)

Batch: the whole test split in batches of 512; latency: median of 300 single-image calls after
warm-up. PyTorch runs the float model as the export stage compares it (fp32, channels_last).
Prints a markdown table; writes `bench/results/onnx_vs_pytorch.json`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from bench import RESULTS
from pipeline.core.paths import ProjectPaths, project_root
from pipeline.data.splits import load_split
from pipeline.model import onnx_file
from pipeline.model.model_file import load_model
from pipeline.training.runtime import predict_batches, select_runtime


def latency_ms(call, image, repeats: int = 300) -> float:
    for _ in range(20):
        call(image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(image)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=project_root())
    args = parser.parse_args()
    paths = ProjectPaths(args.root.resolve())
    model, _ = load_model(paths.model_file)
    session = onnx_file.session(paths.onnx_file)
    images = load_split(paths.processed, "test").images
    runtime = select_runtime("cpu", "fp32")
    results = {}
    for name, batch_call, single_call in (
        ("PyTorch fp32", lambda x: predict_batches(model, x, 512, runtime),
         lambda x: predict_batches(model, x, 1, runtime)),
        ("onnxruntime", lambda x: onnx_file.predict(session, x.numpy(), 512),
         lambda x: onnx_file.predict(session, x.numpy(), 1)),
    ):  # fmt: skip
        batch_call(images[:1024])
        start = time.perf_counter()
        batch_call(images)
        seconds = time.perf_counter() - start
        results[name] = {
            "images_per_second": round(len(images) / seconds),
            "single_image_ms": round(latency_ms(single_call, images[:1]), 3),
        }
    output = {"threads": torch.get_num_threads(), "test_images": len(images), "results": results}
    (RESULTS / "onnx_vs_pytorch.json").write_text(json.dumps(output, indent=2) + "\n")
    print("| runtime | batch 512, images/s | one image, ms |")
    print("|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['images_per_second']:,} | {r['single_image_ms']} |")


if __name__ == "__main__":
    main()
