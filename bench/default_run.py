"""The default run, timed: `make run`'s training flow in a fresh copy of the project, then a
no-op `dvc repro`. The copy keeps the user's workspace, models and MLflow store untouched."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

TELEMETRY_OFF = {
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


def bench_env(root: Path) -> dict[str, str]:
    """The Makefile's environment for a project at `root`, without the user's own store settings."""
    dropped = {"PIPELINE_ROOT", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "DVC_ROOT", "PREFECT_API_URL"}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(TELEMETRY_OFF, PREFECT_HOME=str(root / ".prefect"))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for role in ("AUTHOR", "COMMITTER"):
        env.setdefault(f"GIT_{role}_NAME", "bench")
        env.setdefault(f"GIT_{role}_EMAIL", "bench@localhost")
    return env


def run(root: Path, *args: str) -> tuple[float, str]:
    """Run a command in `root`; its wall time in seconds and its output. Raises on failure."""
    start = time.perf_counter()
    done = subprocess.run(args, cwd=root, env=bench_env(root), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed in {root}:\n{(done.stdout + done.stderr)[-3000:]}")
    return seconds, done.stdout + done.stderr


# what a copy leaves out where git cannot list the files: at the project's top level, and (the last) anywhere
NOT_COPIED = {".git", ".gpu", ".venv", ".prefect", "mlflow.db", "mlartifacts", "models", "data", "cache", "tmp"}
NOT_COPIED_ANYWHERE = {"__pycache__"}


def copy_project(source: Path, target: Path) -> Path:
    """The project's tracked and unignored files (the working tree, uncommitted changes included),
    and the data its `.dvc` files pin where the source has it (DVC-tracked, so git-ignored), in a
    new git repository at `target`. Where git or the source's repository is missing (a lent GPU
    machine gets the working tree alone), the tree without data, models, stores and caches, with
    DVC told there is no git."""
    if target.exists():
        shutil.rmtree(target)
    if not (shutil.which("git") and (source / ".git").exists()):
        top = source.resolve()

        def not_copied(folder: str, names: list[str]) -> set[str]:
            here = Path(folder).resolve() == top
            return {name for name in names if name in NOT_COPIED_ANYWHERE or (here and name in NOT_COPIED)}

        shutil.copytree(source, target, ignore=not_copied)
        run(target, sys.executable, "-m", "dvc", "config", "--local", "core.no_scm", "true")
        return target
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=source, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    names = [name for name in listed.split("\0") if name and (source / name).is_file()]
    for name in names:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, target / name)
    for name in (name for name in names if name.endswith(".dvc")):
        for out in yaml.safe_load((source / name).read_text()).get("outs", []):
            pinned = Path(name).parent / out["path"]
            if (source / pinned).is_dir():
                shutil.copytree(source / pinned, target / pinned, dirs_exist_ok=True)
    for args in (("git", "init", "-q"), ("git", "add", "-A"), ("git", "commit", "-qm", "benchmark copy")):
        run(target, *args)
    return target


def create_stores(root: Path) -> dict[str, float]:
    """Create the copy's MLflow and Prefect stores, as a project's first run does; their times.

    The default run is then timed as every later run is, with both stores in place.
    """
    mlflow_seconds, _ = run(
        root, sys.executable, "-c", "from pipeline.core.config import load_config; "
        "from pipeline.core.tracking import connect; connect(load_config())",
    )  # fmt: skip
    prefect_seconds, _ = run(root, sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y")
    return {"mlflow_store_seconds": mlflow_seconds, "prefect_database_seconds": prefect_seconds}


def prepare_data(root: Path) -> None:
    """Only validate and preprocess (for a benchmark without the default run)."""
    run(root, sys.executable, "-m", "dvc", "repro", "preprocess")


def default_run(root: Path, noop_repeats: int = 3) -> dict:
    """Time `python -m flows.training` (what `make run` runs) from a clean copy, then no-op repros.

    The flow's output is kept beside the copy, in `default_run.log`.
    """
    total, output = run(root, sys.executable, "-m", "flows.training")
    (root.parent / "default_run.log").write_text(output)
    flow = json.loads((root / "reports" / "training_flow.json").read_text())
    train = json.loads((root / "metrics" / "train.json").read_text())
    evaluation = json.loads((root / "metrics" / "eval.json").read_text())
    noops = []
    for _ in range(noop_repeats):
        seconds, output = run(root, sys.executable, "-m", "dvc", "repro")
        if "Running stage" in output:
            raise RuntimeError(f"dvc repro after the flow was not a no-op:\n{output[-2000:]}")
        noops.append(seconds)
    training = train["train_seconds"] + train["validation_seconds"]
    stage_sum = sum(flow["seconds"].values())
    return {
        "total_seconds": total,
        "stage_seconds": flow["seconds"],
        "flow_overhead_seconds": total - stage_sum,
        "train_loop_seconds": train["train_seconds"],
        "validation_in_training_seconds": train["validation_seconds"],
        "outside_training_seconds": total - training,
        "outside_training_share": (total - training) / total,
        "epochs": train["epochs"],
        "train_images_per_second": train["images_per_second"],
        "peak_training_memory_mb": train["peak_memory_mb"],
        "test_accuracy": evaluation["accuracy"],
        "test_macro_f1": evaluation["macro_f1"],
        "noop_repro_seconds": statistics.median(noops),
    }
