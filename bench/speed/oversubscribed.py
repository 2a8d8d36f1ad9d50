"""More training processes than cores (what `make test`'s workers do): OpenMP's spinning waits
against passive ones.

    python -m bench.speed.oversubscribed [--processes 3] [--mb 250] [--repeats 2]

Writes `--processes` small projects (`bench.speed.memory_limit.write_project`: `--mb` of 96-px
images each, a tiny model, one epoch streamed from the shards), then runs `python -m
pipeline.train` in all of them at once and in one alone, with `OMP_WAIT_POLICY` unset (OpenMP's
default: threads spin while they wait) and `PASSIVE` (they sleep). Prints one JSON line of
wall-clock seconds per case and repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.speed.memory_limit import write_project


def project(root: Path, megabytes: int, seed: int) -> Path:
    folder = write_project(root, megabytes * 2**20, size=96, seed=seed)
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["train"]["loader"] = "stream"
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return folder


def train_at_once(folders: list[Path], policy: str | None) -> float:
    """Seconds until `python -m pipeline.train` has finished in every folder, all started together."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    started = time.perf_counter()
    running = [
        subprocess.Popen(
            [sys.executable, "-m", "pipeline.train"],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**env, "PIPELINE_ROOT": str(folder), "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"},
        )
        for folder in folders
    ]
    for folder, process in zip(folders, running, strict=True):
        if process.wait() != 0:
            sys.exit(f"error: the training in {folder} failed; run `python -m pipeline.train` there to see why")
    return round(time.perf_counter() - started, 1)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.speed.oversubscribed")
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--mb", type=int, default=250, help="each project's training split")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-oversubscribed-"))
    folders = [project(root / str(i), args.mb, seed=i) for i in range(args.processes)]
    result: dict = {"cores": os.cpu_count(), "processes": args.processes, "train_split_mb": args.mb}
    for case, chosen in ((f"{args.processes}_at_once", folders), ("1_alone", folders[:1])):
        for policy in (None, "PASSIVE"):
            name = f"{case}_{(policy or 'default').lower()}_seconds"
            result[name] = [train_at_once(chosen, policy) for _ in range(args.repeats)]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
