"""The GPU benchmark: the training path on a CUDA machine, in one call of a few minutes.

    python -m bench.gpu.benchmark --data FASHION_MNIST_DIR [--out DIR] [--budget SECONDS]
                                                             (bench/gpu/run.sh on a lent GPU)

1. the card and its matrix-multiply limits (TF32 and bf16, 8192³);
2. a fresh copy of the project, validated and preprocessed by `dvc repro` from FASHION_MNIST_DIR;
3. the GPU preset's training step, one speed lever at a time (`bench.gpu.levers`): batch size,
   memory layout, fused optimizer; images/s and share of the bf16 limit;
4. the GPU preset (`params.gpu.yaml`) trained to the end with three seeds, each in a fresh process,
   with the test accuracy after every epoch (`bench.gpu.time_to_accuracy`): seconds to 94 % and 95 %;
5. the whole training flow (`python -m flows.training`) from nothing, in a fresh copy, with the
   GPU preset, timed end to end, the creation of its stores included;
6. the CUDA tests (`pytest -m cuda`: the training path on the GPU, torchrun with NCCL);
7. as the budget allows: the levers the preset was chosen by, each against it on one seed
   (ABLATIONS), then `torch.compile`'s modes on the preset's step.

Every step is recorded as it finishes in OUT/gpu.json (a failed step records its error and the
rest go on); steps that would overrun `--budget` are skipped and say so.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench import RESULTS, default_run, machine
from flows.training import parse_overrides
from pipeline.core.params_file import apply_overrides, read_preset
from pipeline.core.paths import project_root

PROJECT = project_root()

PRESET = PROJECT / "params.gpu.yaml"
SEEDS = (0, 1, 2)
ROUND_ONE = {  # the first round's preset (bench/results/gpu.json of 2026-11-26): 95.13 % and 94.90 % on an H100
    "model.widths": [96, 192, 384], "model.convs_per_block": 3, "model.dropout": 0.2, "train.epochs": 40,
    "train.batch_size": 512, "train.lr": 0.005, "train.augment.max_shift": 2, "train.compile": False,
}  # fmt: skip
# name -> (overrides of the preset, expected seconds): what each lever adds, seed 0, against the preset's seed 0
ABLATIONS: dict[str, tuple[dict, float]] = {
    "round-one preset (no erasing)": ({**ROUND_ONE, "train.augment.erasing": 0.0}, 45),
    "erasing 0.25": ({"train.augment.erasing": 0.25}, 45),
    "batch 1024, lr 0.007": ({"train.batch_size": 1024, "train.lr": 0.007}, 40),
}
EAGER_LEVERS = ("eager", "contiguous (NCHW)", "unfused optimizer", "batch 1024", "batch 2048")
CUDA_TEST_FILES = ("tests/test_cuda.py", "tests/training/test_distributed.py")  # what holds `cuda` tests
COMPILE_LEVERS = ("eager", "compile", "compile max-autotune-no-cudagraphs", "compile reduce-overhead (CUDA graphs)")
FLOW_SECONDS = 120


class Recorder:
    """The results so far, rewritten to `path` after every step."""

    def __init__(self, path: Path, deadline: float):
        self.path, self.deadline = path, deadline
        self.results: dict = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        self.save()

    def save(self) -> None:
        self.path.write_text(json.dumps(self.results, indent=2) + "\n")

    def step(self, name: str, expected: float, action) -> object:
        """Run `action()` unless it would overrun the budget; record its result or its error."""
        left = self.deadline - time.monotonic()
        if left < expected:
            self.results[name] = {"skipped": f"{left:.0f} s of the budget left, {expected:.0f} s expected"}
        else:
            started = time.monotonic()
            try:
                self.results[name] = action()
            except Exception as error:  # a broken step is a finding: record it, go on with the rest
                self.results[name] = {"error": f"{type(error).__name__}: {error}"[-4000:]}
            print(f"[{time.monotonic() - started:6.1f} s] {name}: {str(self.results[name])[:300]}", flush=True)
        self.save()
        return self.results[name]


def run(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=default_run.bench_env(cwd), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}")
    return done


def cuda_tests(out: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *CUDA_TEST_FILES, "-m", "cuda", "-q", "-p", "no:cacheprovider",
         f"--junitxml={out}/cuda.xml"],
        cwd=PROJECT, env=default_run.bench_env(PROJECT), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (out / "cuda-tests.log").write_text(done.stdout + done.stderr)
    return {"exit_code": done.returncode, "summary": (done.stdout.strip().splitlines() or [""])[-1]}


def fresh_copy(target: Path, data: Path) -> Path:
    """The project's files, without models or stores, as a new project at `target` reading
    Fashion-MNIST from `data`."""
    default_run.copy_project(PROJECT, target)
    apply_overrides(target, {"data.path": str(data)})
    return target


def prepare(copy: Path) -> dict:
    """The project copy's manifest and tensors (validate and preprocess)."""
    started = time.perf_counter()
    run([sys.executable, "-m", "dvc", "repro", "preprocess"], copy, 300)
    return {"seconds": time.perf_counter() - started}


def training(copy: Path, overrides: dict, timeout: float) -> dict:
    pairs = [f"--set={key}={json.dumps(value)}" for key, value in overrides.items()]
    done = run([sys.executable, "-m", "bench.gpu.time_to_accuracy", str(copy), *pairs], PROJECT, timeout)
    return json.loads(done.stdout.strip().splitlines()[-1])


def step_levers(copy: Path, overrides: dict, levers: tuple[str, ...], limits: dict, timeout: float) -> dict:
    """`bench.gpu.levers` on `levers`: images/s of each, and its share of the bf16 limit."""
    pairs = [f"--set={key}={json.dumps(value)}" for key, value in overrides.items()]
    variants = [f"--variant={name}" for name in levers]
    done = run([sys.executable, "-m", "bench.gpu.levers", str(copy), *pairs, *variants], PROJECT, timeout)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for row in result["variants"]:
        if "images_per_second" in row and "bf16" in limits:
            row["tflops"] = row["images_per_second"] * result["flops_per_image"] / 1e12
            row["share_of_bf16_limit"] = row["tflops"] * 1e3 / limits["bf16"]
    return result


def seeds_summary(runs: list[dict]) -> dict:
    """Mean ± std of the final test accuracy over seeds, and each seed's seconds to 95 %."""
    accuracies = [run["test_accuracy"] for run in runs]
    return {
        "seeds": [run["overrides"]["train.seed"] for run in runs],
        "test_accuracy_mean": statistics.mean(accuracies),
        "test_accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        "test_accuracy": accuracies,
        "seconds_to_95": [run["seconds_to_95"] for run in runs],
        "training_seconds": [run["training_seconds"] for run in runs],
        "images_per_second": [run["images_per_second"] for run in runs],
    }


def flow(copy: Path, overrides: dict, out: Path, timeout: float) -> dict:
    """`python -m flows.training` with `overrides` in a fresh copy (every stage runs), timed; its stage
    times and results. The flow creates its MLflow and Prefect stores itself (the Prefect CLI that
    creates them ahead on the CPU needs packages the GPU machines lack)."""
    pairs = [f"--set={key}={json.dumps(value)}" for key, value in overrides.items()]
    started = time.perf_counter()
    done = run([sys.executable, "-m", "flows.training", *pairs], copy, timeout)
    total = time.perf_counter() - started
    (out / "flow.log").write_text(done.stdout + done.stderr)
    summary = json.loads((copy / "reports" / "training_flow.json").read_text())
    train = json.loads((copy / "metrics" / "train.json").read_text())
    evaluation = json.loads((copy / "metrics" / "eval.json").read_text())
    return {
        "overrides": overrides,
        "total_seconds": total,
        "stage_seconds": summary["seconds"],
        "train_loop_seconds": train["train_seconds"],
        "validation_in_training_seconds": train["validation_seconds"],
        "train_images_per_second": train["images_per_second"],
        "test_accuracy": evaluation["accuracy"],
        "registration": summary.get("registration"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of Fashion-MNIST's four IDX .gz files")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--budget", type=float, default=530, help="seconds for the whole benchmark")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "attention-pipeline-gpu")
    steps = ("levers", "seeds", "flow", "tests", "ablations", "compile")
    parser.add_argument("--only", action="append", default=[], choices=steps, help="run only these steps (repeatable)")
    parser.add_argument("--ablation", action="append", choices=list(ABLATIONS), help="only these (repeatable)")
    parser.add_argument("--set", dest="pairs", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param in every run (a check on the CPU: --set train.epochs=1)")  # fmt: skip
    args = parser.parse_args()
    common = parse_overrides(args.pairs)
    preset = {**read_preset(PRESET), **common}
    wanted = set(args.only) or set(steps)
    args.out.mkdir(parents=True, exist_ok=True)
    record = Recorder(args.out / "gpu.json", time.monotonic() + args.budget)
    record.results["preset"] = preset
    cuda = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    record.step("machine", 0, machine.describe)
    limits = record.step("matmul_gflops", 0, lambda: machine.matmul_limits(cuda))
    data = args.data.resolve()
    copy = fresh_copy(args.workdir / "project", data)
    if wanted - {"flow", "tests"}:
        record.step("prepare", 30, lambda: prepare(copy))
    if "levers" in wanted:
        record.step("step levers", 60, lambda: step_levers(copy, preset, EAGER_LEVERS, limits, 300))
    if "seeds" in wanted:
        for seed in SEEDS:
            record.step(f"preset, seed {seed}", 45, lambda s=seed: training(copy, {**preset, "train.seed": s}, 150))
        runs = [record.results.get(f"preset, seed {seed}", {}) for seed in SEEDS]
        if all("test_accuracy" in run for run in runs):
            record.results["preset seeds"] = seeds_summary(runs)
            record.save()
    if "flow" in wanted:
        flow_copy = fresh_copy(args.workdir / "flow", data)
        record.step("flow: preset", FLOW_SECONDS, lambda: flow(flow_copy, preset, args.out, 3 * FLOW_SECONDS))
    if "tests" in wanted:
        record.step("cuda_tests", 100, lambda: cuda_tests(args.out))
    if "ablations" in wanted:
        for name in args.ablation or list(ABLATIONS):
            overrides, expected = ABLATIONS[name]
            changed = {**preset, **overrides, "train.seed": SEEDS[0], **common}
            record.step(f"ablation: {name}", expected, lambda o=changed, e=expected: training(copy, o, 3 * e))
    if "compile" in wanted:
        record.step("compile levers", 150, lambda: step_levers(copy, preset, COMPILE_LEVERS, limits, 450))
    print(json.dumps({k: v for k, v in record.results.items() if "seed" not in k}, indent=1)[:3000])


if __name__ == "__main__":
    main()
