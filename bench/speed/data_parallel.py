"""Data-parallel training, measured: the train stage with `train.processes` = 1, 2, ... on the
default dataset in a fresh copy of the project; wall time of the stage and test accuracy for each.

    python -m bench.speed.data_parallel [--processes 1 2] [--epochs 14] [--workdir DIR]

Prints a markdown table and writes `bench/results/data_parallel.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from bench import RESULTS
from bench.default_run import copy_project, run
from pipeline.core.paths import project_root

PROJECT = project_root()


def set_train(root: Path, **values: object) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def measure(root: Path, processes: int, epochs: int) -> dict:
    """Train with `processes` processes and evaluate; wall time, accuracies, throughput."""
    set_train(root, processes=processes, epochs=epochs)
    seconds, _ = run(root, sys.executable, "-m", "pipeline.train")
    run(root, sys.executable, "-m", "pipeline.evaluate")
    trained = json.loads((root / "metrics" / "train.json").read_text())
    evaluated = json.loads((root / "metrics" / "eval.json").read_text())
    return {
        "processes": processes,
        "epochs": epochs,
        "stage_seconds": round(seconds, 1),
        "train_seconds": trained["train_seconds"],
        "images_per_second": round(trained["images_per_second"]),
        "val_accuracy": trained["val_accuracy"],
        "test_accuracy": evaluated["accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default: params.yaml's train.epochs")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "attention-pipeline-bench")
    args = parser.parse_args()
    epochs = args.epochs or yaml.safe_load((PROJECT / "params.yaml").read_text())["train"]["epochs"]
    root = copy_project(PROJECT, args.workdir / "distributed")
    run(root, sys.executable, "-m", "pipeline.validate")
    run(root, sys.executable, "-m", "pipeline.preprocess")
    results = [measure(root, processes, epochs) for processes in args.processes]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    output = {"device": device, "cores": len(os.sched_getaffinity(0)), "results": results}
    (RESULTS / "data_parallel.json").write_text(json.dumps(output, indent=2) + "\n")
    print(f"{device}, {output['cores']} cores")
    print("| processes | train stage wall | training | images/s | val accuracy | test accuracy |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['processes']} | {r['stage_seconds']} s | {r['train_seconds']} s | {r['images_per_second']:,} "
            f"| {r['val_accuracy']:.4f} | {r['test_accuracy']:.4f} |"
        )


if __name__ == "__main__":
    main()
