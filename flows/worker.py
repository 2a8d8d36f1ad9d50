"""Run the flows on a team's Prefect server: create the process work pool if missing, deploy
`prefect.yaml`'s deployments, and start a worker that executes their runs.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.worker      (= make prefect-worker)

Start the server first (`make prefect-server`). Trigger a run with
`prefect deployment run 'training/training'`, or let the retraining schedule do it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from flows.prefect_api import check_server
from pipeline.core.errors import PipelineError, run_command
from pipeline.core.paths import project_root


def work_pool(root) -> str:
    """The work pool that prefect.yaml's deployments name (one for all)."""
    deployments = yaml.safe_load((root / "prefect.yaml").read_text())["deployments"]
    (pool,) = {deployment["work_pool"]["name"] for deployment in deployments}
    return pool


def main() -> None:
    if not os.environ.get("PREFECT_API_URL"):
        raise PipelineError(
            "PREFECT_API_URL is not set; point it at your Prefect server, e.g. http://127.0.0.1:4200/api"
        )
    check_server(os.environ["PREFECT_API_URL"])
    root = project_root()
    pool = work_pool(root)
    prefect = [sys.executable, "-m", "prefect", "--no-prompt"]
    exists = subprocess.run([*prefect, "work-pool", "inspect", pool], cwd=root, capture_output=True).returncode == 0
    if not exists:
        subprocess.run([*prefect, "work-pool", "create", pool, "--type", "process"], cwd=root, check=True)
    # prefect.yaml's pull step runs flows in `{{ $PWD }}`: the environment variable, which only a
    # shell keeps in step with the working directory, so set it to the project root
    deploy = subprocess.run([*prefect, "deploy", "--all"], cwd=root, env={**os.environ, "PWD": str(root)})
    if deploy.returncode != 0:
        raise PipelineError(f"prefect deploy --all failed in {root}; see its output above")
    os.chdir(root)
    os.execv(sys.executable, [*prefect, "worker", "start", "--pool", pool, *sys.argv[1:]])


if __name__ == "__main__":
    run_command(main)
