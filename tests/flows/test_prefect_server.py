"""The flows on a real Prefect server (`make prefect-server`) with a process worker
(`python -m flows.worker`, = `make prefect-worker`): a deployment run triggered from the CLI
executes on the worker and registers a champion."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import requests
from mlflow import MlflowClient

from tests.dvc_repo import command_env, make_repo
from tests.servers import free_port, make_target, stop_group


def test_a_deployment_run_triggered_from_the_cli_runs_on_the_worker(tmp_path):
    repo = make_repo(tmp_path / "repo")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    # PWD: a stale one, as subprocesses inherit it; the flows must still run in the repo
    env = {**command_env(), "PREFECT_API_URL": api, "PREFECT_HOME": str(tmp_path / "client-home"),
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PWD": str(tmp_path)}  # fmt: skip
    with make_target("prefect-server", f"{api}/health", tmp_path / "server.log",
                     PREFECT_PORT=str(port), PREFECT_HOME=str(tmp_path / "server-home")):  # fmt: skip
        with (tmp_path / "worker.log").open("w") as log:
            worker = subprocess.Popen([sys.executable, "-m", "flows.worker"], cwd=repo, env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            deadline = time.monotonic() + 180
            while requests.get(f"{api}/deployments/name/training/training", timeout=10).status_code != 200:
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the worker did not deploy prefect.yaml"
                time.sleep(1)
            triggered = subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", "training/training"],
                                       cwd=repo, env=env, capture_output=True, text=True)  # fmt: skip
            assert triggered.returncode == 0, triggered.stdout + triggered.stderr
            flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", triggered.stdout).group(1)
            state = {}
            while state.get("type") not in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
                assert time.monotonic() < deadline + 300, f"flow run still {state.get('name')}"
                time.sleep(1)
                state = requests.get(f"{api}/flow_runs/{flow_run_id}", timeout=10).json()["state"] or {}
            flow_run = requests.get(f"{api}/flow_runs/{flow_run_id}", timeout=10).json()
        finally:
            stop_group(worker)
    assert state["type"] == "COMPLETED", (tmp_path / "worker.log").read_text()[-3000:]
    assert flow_run["work_pool_name"] == "attention-pool" and flow_run["deployment_id"]
    assert f"{flow_run_id}" in (tmp_path / "worker.log").read_text()
    uri = f"sqlite:///{repo / 'mlflow.db'}"
    champion = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(
        "attention-classifier", "champion"
    )
    assert str(champion.version) == "1" and (repo / "reports" / "training_flow.json").is_file()
