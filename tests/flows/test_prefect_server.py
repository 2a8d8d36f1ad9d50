"""A team's servers, started as users start them: a Prefect server (`make prefect-server`) with a
process worker (`python -m flows.worker`, = `make prefect-worker`) and an MLflow tracking server
(`make mlflow-server`). A deployment run triggered from the CLI executes on the worker, logs and
registers on the tracking server (nothing in the project's own store), the champion can be read
back over HTTP, and the MLflow UI works with no network."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import requests

from tests.dvc_repo import command_env, make_repo
from tests.servers import free_port, make_target, offline_page, stop_group


def test_a_deployment_run_triggered_from_the_cli_runs_on_the_worker_and_registers_on_the_tracking_server(tmp_path):
    repo = make_repo(tmp_path / "repo")
    port, tracking_port = free_port(), free_port()
    api, uri = f"http://127.0.0.1:{port}/api", f"http://127.0.0.1:{tracking_port}"
    store = tmp_path / "server-store"
    # PWD: a stale one, as subprocesses inherit it; the flows must still run in the repo
    env = {**command_env(), "PREFECT_API_URL": api, "PREFECT_HOME": str(tmp_path / "client-home"),
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PWD": str(tmp_path), "MLFLOW_TRACKING_URI": uri}  # fmt: skip
    with (
        make_target("mlflow-server", f"{uri}/health", tmp_path / "mlflow-server.log",
                    MLFLOW_SERVER_PORT=str(tracking_port), MLFLOW_SERVER_STORE=str(store)),
        make_target("prefect-server", f"{api}/health", tmp_path / "server.log",
                    PREFECT_PORT=str(port), PREFECT_HOME=str(tmp_path / "server-home")),
    ):  # fmt: skip
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
        champion = requests.get(
            f"{uri}/api/2.0/mlflow/registered-models/alias",
            params={"name": "attention-classifier", "alias": "champion"}, timeout=10,
        ).json()["model_version"]  # fmt: skip
        run = requests.get(f"{uri}/api/2.0/mlflow/runs/get", params={"run_id": champion["run_id"]}, timeout=10).json()
        listed, web = ui_offline(uri)
    assert flow_run["work_pool_name"] == "attention-pool" and flow_run["deployment_id"]
    assert f"{flow_run_id}" in (tmp_path / "worker.log").read_text()
    assert (repo / "reports" / "training_flow.json").is_file()
    tags = {tag["key"]: tag["value"] for tag in run["run"]["data"]["tags"]}
    metrics = {metric["key"] for metric in run["run"]["data"]["metrics"]}
    assert champion["version"] == "1" and tags["registry_decision"] == "promoted"
    assert {"val_accuracy", "test_accuracy"} <= metrics
    assert not (repo / "mlflow.db").exists() and not (repo / "mlartifacts").exists()
    assert (store / "mlflow.db").is_file() and any((store / "artifacts").rglob("model.pt"))
    assert "attention-pipeline" in listed and web == []  # the UI lists the run's experiment, all from the server


def ui_offline(uri: str) -> tuple[str, list[str]]:
    """The MLflow UI's home page in Chromium with every request off the server refused: its text,
    and what it asked of the network."""
    with offline_page(f"{uri}/") as (page, web):
        page.goto(f"{uri}/", wait_until="domcontentloaded")
        page.get_by_text("attention-pipeline", exact=True).first.wait_for(timeout=60_000)
        text = page.inner_text("body")
    return text, web
