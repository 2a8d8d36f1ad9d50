"""A real git + DVC repository of the project in a temporary folder, and commands run in it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.synthetic import PROJECT, small_params, write_dataset

STAGES = ("validate", "preprocess", "train", "evaluate", "export", "register")


def command_env() -> dict[str, str]:
    dropped = {"PIPELINE_ROOT", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "DVC_ROOT"}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for role in ("AUTHOR", "COMMITTER"):
        env[f"GIT_{role}_NAME"], env[f"GIT_{role}_EMAIL"] = "test", "test@example.com"
    return env


def run(root: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=root, env=command_env(), capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{(done.stdout + done.stderr)[-4000:]}"
    return done


def dvc(root: Path, *args: str) -> str:
    done = run(root, sys.executable, "-m", "dvc", *args)
    return done.stdout + done.stderr


def stages_run(output: str) -> set[str]:
    return {stage for stage in STAGES if f"Running stage '{stage}'" in output}


def make_repo(root: Path, **sections: dict) -> Path:
    """The project's pipeline, flows, dvc.yaml, .dvcignore, prefect.yaml and small params in a fresh repo with a
    `dvc add`-ed image folder."""
    for package in ("pipeline", "flows"):
        shutil.copytree(PROJECT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "prefect.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(PROJECT / name, root / name)
    (root / "params.yaml").write_text(yaml.safe_dump(small_params("data/images", **sections)))
    write_dataset(root / "data" / "images", {"train": 40, "test": 10})
    run(root, "git", "init", "-q")
    dvc(root, "init", "-q")
    dvc(root, "config", "core.analytics", "false")
    dvc(root, "add", "-q", "data/images")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "project")
    return root
