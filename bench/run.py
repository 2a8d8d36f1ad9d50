"""Run the whole benchmark; write `bench/results.json` and the results section of BENCHMARKS.md.

    python -m bench.run [--repeats 3] [--skip-default-run] [--workdir DIR]    (= make bench)

1. the machine and its limit (matrix multiply, fp32 and bf16);
2. the default run: the training flow in a fresh copy of the project, stage by stage, then a
   no-op `dvc repro` (skipped with --skip-default-run: the copy then only validates and preprocesses);
3. training throughput, alternating in fresh processes: the tutorial reference, the pipeline's
   own step, and the ladder of its speed-ups; FLOPs per image; peak memory;
4. inference: batch throughput and single-image latency.

Throughputs are medians over the repeats; the speed-up is the median of the per-repeat ratios.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

from bench import default_run, machine, report
from bench.training_step import LADDER, TUTORIAL_BATCH
from pipeline.core.config import load_config
from pipeline.core.paths import project_root
from pipeline.training.runtime import native_cpu_bf16

PROJECT = project_root()


def measured(module: str, *args: str) -> dict:
    """Run `python -m bench.<module> ARGS` in a fresh process; its JSON result."""
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args], cwd=PROJECT, capture_output=True, text=True,
        env=default_run.bench_env(PROJECT),
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"bench.{module} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def export_pngs(processed: Path, target: Path) -> Path:
    """The preprocessed training split as PNG files in class folders, for the reference's ImageFolder."""
    split = torch.load(processed / "train.pt", weights_only=True)
    classes = json.loads((processed / "meta.json").read_text())["classes"]
    for index, (image, label) in enumerate(zip(split["images"], split["labels"].tolist(), strict=True)):
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


def training_throughput(copy: Path, pngs: Path, repeats: int, steps: list[str]) -> dict:
    """Reference, pipeline and ladder images/s, alternating in fresh processes, `repeats` times."""
    runs: list[dict] = []
    for repeat in range(repeats):
        reference = measured("reference", str(pngs), str(copy))
        pipeline = measured("training_step", str(copy), *(["--count-flops"] if repeat == 0 else []))
        row = {"reference": reference["images_per_second"], "pipeline": pipeline["images_per_second"]}
        for step in steps:
            row[step] = measured("training_step", str(copy), "--variant", step)["images_per_second"]
        if repeat == 0:
            flops, memory, runtime = pipeline["flops_per_image"], pipeline["peak_memory_mb"], pipeline["runtime"]
        runs.append(row)
        print(f"  repeat {repeat + 1}: " + ", ".join(f"{k} {v:.0f}" for k, v in row.items()) + " images/s")
    median = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    return {
        "reference_images_per_second": median["reference"],
        "pipeline_images_per_second": median["pipeline"],
        "speedup": statistics.median(run["pipeline"] / run["reference"] for run in runs),
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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="repeats of each throughput measurement")
    parser.add_argument("--skip-default-run", action="store_true", help="skip the timed default run (~10 min)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "attention-pipeline-bench",
                        help="where the project copy and PNG files go (replaced)")  # fmt: skip
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    results: dict = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    results["machine"] = machine.describe()
    results["matmul_gflops"] = machine.matmul_limits(torch.device("cuda" if cuda else "cpu"))
    print(f"machine: {results['machine']}\nmatmul GFLOP/s: {results['matmul_gflops']}")

    copy = default_run.copy_project(PROJECT, args.workdir / "project")
    results["store_creation"] = default_run.create_stores(copy)
    if args.skip_default_run:
        default_run.prepare_data(copy)
        results["default_run"] = None
    else:
        print("default run (the training flow in a fresh copy) ...")
        results["default_run"] = default_run.default_run(copy)
        print(f"  {results['default_run']}")
    pngs = export_pngs(copy / "data" / "processed", args.workdir / "png")

    print("training throughput ...")
    cfg = load_config(copy / "params.yaml")
    training = training_throughput(copy, pngs, args.repeats, ladder(cfg.train.batch_size, cuda))
    limit_name = "bf16" if training["runtime"].endswith("bf16") else "fp32"
    training["achieved_gflops"] = training["pipeline_images_per_second"] * training["flops_per_image"] / 1e9
    training["limit"] = limit_name
    training["share_of_limit"] = training["achieved_gflops"] / results["matmul_gflops"][limit_name]
    results["training"] = training
    results["inference"] = measured("inference", str(copy))
    print(f"inference: {results['inference']}")

    (PROJECT / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report.update_benchmarks(PROJECT / "BENCHMARKS.md", report.results_markdown(results))
    print(f"wrote bench/results.json and BENCHMARKS.md (speed-up {training['speedup']:.2f}x)")


if __name__ == "__main__":
    main()
