"""Run the whole benchmark; write `bench/results/run.json` and the results section of BENCHMARKS.md.

    python -m bench.run [--repeats 3] [--skip-default-run] [--workdir DIR]    (= make bench)
    python -m bench.run --smoke [--workdir DIR]                               (= make bench-smoke)

1. the machine and its limit (matrix multiply, fp32 and bf16);
2. the default run: the training flow in a fresh copy of the project, stage by stage, then a
   no-op `dvc repro` (skipped with --skip-default-run: the copy then only validates and preprocesses);
3. training throughput, alternating in fresh processes: the tutorial reference, the pipeline's
   own step, and the ladder of its speed-ups; FLOPs per image; peak memory;
4. inference: batch throughput and single-image latency.

Throughputs are medians over the repeats; the speed-up is the median of the per-repeat ratios.

`--smoke` runs the same set-up end to end in well under a minute, to find what would break
`make bench` before its hour is spent: a tiny generated project (this project's files, its pinned
Fashion-MNIST replaced by 800 generated images and `dvc add`ed) is copied as the benchmark copies
this one, its stores are created, `dvc repro` validates and preprocesses in the copy, and every
measurement runs once, small, without the default run and the ladder. It writes to `--workdir`
only (run.json, BENCHMARKS.md), never to bench/results/ or BENCHMARKS.md; the figures mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench import RESULTS, benchmarks_md, default_run, machine
from bench.speed.training_step import LADDER, STREAMED, TUTORIAL_BATCH
from pipeline.core.config import load_config
from pipeline.core.paths import project_root
from pipeline.data.fashion_mnist import FILES as FASHION_MNIST_FILES
from pipeline.data.splits import load_split
from pipeline.training.runtime import native_cpu_bf16

PROJECT = project_root()
SMOKE_IMAGES = ("--images", "64")  # each throughput measurement's images in the smoke run


def measured(module: str, *args: str) -> dict:
    """Run `python -m bench.speed.<module> ARGS` in a fresh process; its JSON result."""
    done = subprocess.run(
        [sys.executable, "-m", f"bench.speed.{module}", *args], cwd=PROJECT, capture_output=True, text=True,
        env=default_run.bench_env(PROJECT),
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"bench.speed.{module} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def export_pngs(processed: Path, target: Path) -> Path:
    """The preprocessed training split as PNG files in class folders, for the reference's ImageFolder."""
    split = load_split(processed, "train")
    classes = json.loads((processed / "meta.json").read_text())["classes"]
    for index, (image, label) in enumerate(zip(split.images, split.labels.tolist(), strict=True)):
        folder = target / classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(folder / f"{index:05d}.png")
    return target


def ladder(cfg_batch: int, cuda: bool) -> list[str]:
    """The ladder steps that apply on this machine and config."""
    steps = list(LADDER)
    if not (cuda or native_cpu_bf16()):
        steps.remove("+ bf16 autocast")
    if cfg_batch == TUTORIAL_BATCH:
        steps.remove("+ params.yaml batch size")
    if cuda:
        steps.remove("+ allocator keeps freed memory")
    return steps


def training_throughput(copy: Path, pngs: Path, repeats: int, steps: list[str], sizes: tuple[str, ...] = ()) -> dict:
    """Reference, pipeline and ladder images/s, alternating in fresh processes, `repeats` times
    (`sizes`: arguments that each measurement gets, such as `--images N`)."""
    runs: list[dict] = []
    for repeat in range(repeats):
        reference = measured("reference", str(pngs), str(copy), *sizes)
        pipeline = measured("training_step", str(copy), *sizes, *(["--count-flops"] if repeat == 0 else []))
        streamed = measured("training_step", str(copy), *sizes, "--variant", STREAMED)
        row = {
            "reference": reference["images_per_second"], "pipeline": pipeline["images_per_second"],
            STREAMED: streamed["images_per_second"],
        }  # fmt: skip
        for step in steps:
            row[step] = measured("training_step", str(copy), *sizes, "--variant", step)["images_per_second"]
        if repeat == 0:
            flops, memory, runtime = pipeline["flops_per_image"], pipeline["peak_memory_mb"], pipeline["runtime"]
        runs.append(row)
        print(f"  repeat {repeat + 1}: " + ", ".join(f"{k} {v:.0f}" for k, v in row.items()) + " images/s")
    median = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    return {
        "reference_images_per_second": median["reference"],
        "pipeline_images_per_second": median["pipeline"],
        "speedup": statistics.median(run["pipeline"] / run["reference"] for run in runs),
        "streamed_images_per_second": median[STREAMED],  # the images read from shards on disk, not memory
        "streamed_vs_memory": statistics.median(run[STREAMED] / run["pipeline"] for run in runs),
        "ladder": [
            {
                "change": step,
                "images_per_second": median[step],
                "vs_reference": statistics.median(run[step] / run["reference"] for run in runs),
            }
            for step in steps
        ],
        "flops_per_image": flops,
        "runtime": runtime,
        "peak_memory_mb": memory,
        "runs": runs,
    }


def benchmark(source: Path, workdir: Path, repeats: int, with_default_run: bool, smoke: bool = False) -> dict:
    """Every measurement on a fresh copy of the project at `source` (in `workdir`); the results."""
    cuda = torch.cuda.is_available()
    results: dict = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    results["machine"] = machine.describe()
    results["matmul_gflops"] = machine.matmul_limits(torch.device("cuda" if cuda else "cpu"), 256 if smoke else None)
    print(f"machine: {results['machine']}\nmatmul GFLOP/s: {results['matmul_gflops']}")

    copy = default_run.copy_project(source, workdir / "project")
    results["store_creation"] = default_run.create_stores(copy)
    if not with_default_run:
        default_run.prepare_data(copy)
        results["default_run"] = None
    else:
        print("default run (the training flow in a fresh copy) ...")
        results["default_run"] = default_run.default_run(copy)
        print(f"  {results['default_run']}")
    pngs = export_pngs(copy / "data" / "processed", workdir / "png")

    print("training throughput ...")
    cfg = load_config(copy / "params.yaml")
    steps = [] if smoke else ladder(cfg.train.batch_size, cuda)
    training = training_throughput(copy, pngs, repeats, steps, SMOKE_IMAGES if smoke else ())
    limit_name = "bf16" if training["runtime"].endswith("bf16") else "fp32"
    training["achieved_gflops"] = training["pipeline_images_per_second"] * training["flops_per_image"] / 1e9
    training["limit"] = limit_name
    training["share_of_limit"] = training["achieved_gflops"] / results["matmul_gflops"][limit_name]
    results["training"] = training
    results["inference"] = measured("inference", str(copy), *(["--calls", "20"] if smoke else []))
    print(f"inference: {results['inference']}")
    return results


def write_generated_fashion_mnist(target: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """Fashion-MNIST's four IDX files in `target`, of generated 28×28 images (noise, brighter with
    the class), `per_class` images of each of the 10 classes per split."""
    rng = np.random.default_rng(seed)
    target.mkdir(parents=True, exist_ok=True)
    for split, count in per_class.items():
        labels = np.arange(10 * count, dtype=np.uint8) % 10
        images = rng.integers(0, 150, (len(labels), 28, 28), dtype=np.uint8) + 10 * labels[:, None, None]
        images_name, labels_name = FASHION_MNIST_FILES[split]
        header = (0x0803).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in images.shape)
        (target / images_name).write_bytes(gzip.compress(header + images.tobytes(), compresslevel=1))
        header = (0x0801).to_bytes(4, "big") + len(labels).to_bytes(4, "big")
        (target / labels_name).write_bytes(gzip.compress(header + labels.tobytes(), compresslevel=1))
    return target


def tiny_project(target: Path) -> Path:
    """This project's files, its pinned Fashion-MNIST replaced by a tiny generated one (`dvc add`ed,
    committed): a source that the benchmark copies as it copies this one, in seconds."""
    default_run.copy_project(PROJECT, target)
    data = target / "data" / "fashion-mnist"
    shutil.rmtree(data, ignore_errors=True)
    write_generated_fashion_mnist(data, {"train": 60, "test": 20})
    default_run.run(target, sys.executable, "-m", "dvc", "add", "-q", "data/fashion-mnist")
    default_run.run(target, "git", "commit", "-qam", "tiny generated Fashion-MNIST")
    return target


def smoke(workdir: Path) -> dict:
    """The benchmark's set-up end to end on a tiny generated project (see the module docstring);
    its results, also in `workdir`/run.json and `workdir`/BENCHMARKS.md."""
    source = tiny_project(workdir / "source")
    results = benchmark(source, workdir, repeats=1, with_default_run=False, smoke=True)
    (workdir / "run.json").write_text(json.dumps(results, indent=2) + "\n")
    benchmarks_md.update_benchmarks(workdir / "BENCHMARKS.md", benchmarks_md.results_markdown(results))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="repeats of each throughput measurement")
    parser.add_argument("--skip-default-run", action="store_true", help="skip the timed default run (~10 min)")
    parser.add_argument("--smoke", action="store_true", help="the set-up end to end on a tiny project (< 1 min)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "attention-pipeline-bench",
                        help="where the project copy and PNG files go (replaced)")  # fmt: skip
    args = parser.parse_args()
    if args.smoke:
        start = time.perf_counter()
        smoke(args.workdir / "smoke")
        print(f"smoke run passed in {time.perf_counter() - start:.0f} s; its files are in {args.workdir / 'smoke'}")
        return
    results = benchmark(PROJECT, args.workdir, args.repeats, not args.skip_default_run)
    training = results["training"]
    (RESULTS / "run.json").write_text(json.dumps(results, indent=2) + "\n")
    benchmarks_md.update_benchmarks(PROJECT / "BENCHMARKS.md", benchmarks_md.results_markdown(results))
    print(f"wrote bench/results/run.json and BENCHMARKS.md (speed-up {training['speedup']:.2f}x)")


if __name__ == "__main__":
    main()
