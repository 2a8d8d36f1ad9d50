"""What a run was made from: the data version (DVC's hash of the source) and the git commit."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pipeline.core.config import Config


def data_version(cfg: Config) -> str:
    """DVC's hash of the source dataset (`data.path`, as `dvc.lock` records it for the validate
    stage), computed now; 'unversioned' outside a DVC repo."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(cfg.root)) as repo:
            for stage in repo.stage.collect("validate"):
                for dep in stage.deps:
                    if Path(dep.fs_path).resolve() == cfg.source_path().resolve():
                        return dep.get_hash().value
    except DvcException:
        pass
    return "unversioned"


def git_commit(root: Path) -> str:
    """The checked-out git commit (with '-dirty' when the work tree has changes), or 'unknown'."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit
