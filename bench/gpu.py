"""The GPU benchmark: the training path on a CUDA machine, in one call of a few minutes.

    python -m bench.gpu --data FASHION_MNIST_DIR [--out DIR] [--budget SECONDS]   (bench/gpu.sh on a lent GPU)

1. the card and its matrix-multiply limits (TF32 and bf16, 8192³);
2. a fresh copy of the project, validated and preprocessed by `dvc repro` from FASHION_MNIST_DIR;
3. training to the end with the test accuracy after every epoch (`bench.time_to_accuracy`), each
   in a fresh process: the default params with `train.compile` off and on, then the GPU preset
   (`params.gpu.yaml`); images/s, share of the bf16 limit, seconds to 94 % and 95 %;
4. the whole training flow (`python -m flows.training`) from nothing, in a fresh copy, with the
   GPU preset (or `--preset NAME`), timed end to end, the creation of its stores included;
5. the CUDA tests (`pytest -m cuda`);
6. the alternatives to the preset that were measured against it, as the budget allows.

Every step is recorded as it finishes in OUT/gpu.json (a failed step records its error and the
rest go on); steps that would overrun `--budget` are skipped and say so.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench import default_run, machine
from flows.params_file import apply_overrides, read_preset
from flows.training import parse_overrides
from pipeline.core.paths import project_root

PROJECT = project_root()

PRESET = PROJECT / "params.gpu.yaml"
WIDER = {
    "model.widths": [128, 256, 512], "model.dropout": 0.2, "train.batch_size": 512, "train.epochs": 40,
    "train.lr": 0.005, "train.augment.max_shift": 2,
}  # fmt: skip
# name -> (overrides of params.yaml, expected seconds on an H100, for the budget). RUNS are the
# essentials; the flow runs after them, then the CUDA tests, then the alternatives to the preset.
RUNS: dict[str, tuple[dict, float]] = {
    "default": ({"train.compile": False}, 30),
    "default + compile": ({"train.compile": True}, 70),
    "gpu preset": (read_preset(PRESET), 50),
}
EXTRA_RUNS: dict[str, tuple[dict, float]] = {
    "wider": ({**WIDER, "train.compile": False}, 60),
    "wider + compile": ({**WIDER, "train.compile": True}, 90),
}
FLOW_SECONDS = 150
NOT_COPIED = (".git", ".gpu", ".venv", ".prefect", "mlflow.db", "models", "data", "cache", "tmp", "__pycache__")


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
        [sys.executable, "-m", "pytest", "tests/test_cuda.py", "-m", "cuda", "-q", "-p", "no:cacheprovider",
         f"--junitxml={out}/cuda.xml"],
        cwd=PROJECT, env=default_run.bench_env(PROJECT), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (out / "cuda-tests.log").write_text(done.stdout + done.stderr)
    return {"exit_code": done.returncode, "summary": (done.stdout.strip().splitlines() or [""])[-1]}


def fresh_copy(target: Path, data: Path) -> Path:
    """The project's files, without data, models or stores, as a new repository at `target`
    reading Fashion-MNIST from `data` (a git repository where git is installed, else DVC without git)."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(PROJECT, target, ignore=shutil.ignore_patterns(*NOT_COPIED))
    apply_overrides(target, {"data.path": str(data)})
    if shutil.which("git"):
        for args in (("git", "init", "-q"), ("git", "add", "-A"), ("git", "commit", "-qm", "benchmark copy")):
            run(list(args), target, 60)
    else:
        run([sys.executable, "-m", "dvc", "config", "--local", "core.no_scm", "true"], target, 60)
    return target


def prepare(copy: Path) -> dict:
    """The project copy's manifest and tensors (validate and preprocess)."""
    started = time.perf_counter()
    run([sys.executable, "-m", "dvc", "repro", "preprocess"], copy, 300)
    return {"seconds": time.perf_counter() - started}


def training(copy: Path, overrides: dict, timeout: float) -> dict:
    pairs = [f"--set={key}={json.dumps(value)}" for key, value in overrides.items()]
    done = run([sys.executable, "-m", "bench.time_to_accuracy", str(copy), *pairs], PROJECT, timeout)
    return json.loads(done.stdout.strip().splitlines()[-1])


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
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of Fashion-MNIST's four IDX .gz files")
    parser.add_argument("--out", type=Path, default=PROJECT / "bench")
    parser.add_argument("--budget", type=float, default=330, help="seconds for the whole benchmark")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "attention-pipeline-gpu")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="STEP",
        help="run only these steps: tests, flow, or a training run's name (repeatable)",
    )
    parser.add_argument("--preset", choices=[*RUNS, *EXTRA_RUNS], default="gpu preset", help="the flow's params")
    parser.add_argument("--set", dest="pairs", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param in every run (a check on the CPU: --set train.epochs=1)")  # fmt: skip
    args = parser.parse_args()
    common = parse_overrides(args.pairs)
    wanted = set(args.only) or {"tests", "flow", *RUNS, *EXTRA_RUNS}
    args.out.mkdir(parents=True, exist_ok=True)
    record = Recorder(args.out / "gpu.json", time.monotonic() + args.budget)
    cuda = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    record.step("machine", 0, machine.describe)
    limits = record.step("matmul_gflops", 0, lambda: machine.matmul_limits(cuda))
    data = args.data.resolve()
    copy = fresh_copy(args.workdir / "project", data)
    if wanted & {*RUNS, *EXTRA_RUNS}:
        record.step("prepare", 30, lambda: prepare(copy))

    def train_run(name: str, overrides: dict, expected: float) -> None:
        if name not in wanted:
            return
        run_overrides = {**overrides, **common}
        result = record.step(f"training: {name}", expected, lambda: training(copy, run_overrides, 3 * expected))
        if "images_per_second" in result and "bf16" in limits:
            achieved = result["images_per_second"] * result["flops_per_image"] / 1e9
            result.update(achieved_gflops=achieved, share_of_bf16_limit=achieved / limits["bf16"])
            record.save()

    for name, (overrides, expected) in RUNS.items():
        train_run(name, overrides, expected)
    if "flow" in wanted:
        flow_copy = fresh_copy(args.workdir / "flow", data)
        overrides = {**{**RUNS, **EXTRA_RUNS}[args.preset][0], **common}
        timed = lambda: flow(flow_copy, overrides, args.out, 3 * FLOW_SECONDS)  # noqa: E731
        record.step(f"flow: {args.preset}", FLOW_SECONDS, timed)
    if "tests" in wanted:
        record.step("cuda_tests", 90, lambda: cuda_tests(args.out))
    for name, (overrides, expected) in EXTRA_RUNS.items():
        train_run(name, overrides, expected)
    print(json.dumps({k: v for k, v in record.results.items() if not k.startswith("training")}, indent=1)[:3000])


if __name__ == "__main__":
    main()
