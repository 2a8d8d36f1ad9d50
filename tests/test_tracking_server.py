"""The pipeline against a real `mlflow server` (`make mlflow-server`) on localhost: it logs and
registers there, the champion can be read back over HTTP, and its UI works with no network."""

from __future__ import annotations

import subprocess
import sys

import requests

from tests.dvc_repo import command_env, make_repo
from tests.servers import free_port, make_target, offline_page


def test_pipeline_logs_and_registers_on_a_tracking_server(tmp_path):
    repo = make_repo(tmp_path / "repo")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    store = tmp_path / "server-store"
    with make_target("mlflow-server", f"{uri}/health", tmp_path / "server.log",
                     MLFLOW_SERVER_PORT=str(port), MLFLOW_SERVER_STORE=str(store)):  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "dvc", "repro"], cwd=repo, env={**command_env(), "MLFLOW_TRACKING_URI": uri},
            capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        champion = requests.get(
            f"{uri}/api/2.0/mlflow/registered-models/alias",
            params={"name": "attention-classifier", "alias": "champion"}, timeout=10,
        ).json()["model_version"]  # fmt: skip
        run = requests.get(f"{uri}/api/2.0/mlflow/runs/get", params={"run_id": champion["run_id"]}, timeout=10).json()
        listed, web = ui_offline(uri)
    tags = {tag["key"]: tag["value"] for tag in run["run"]["data"]["tags"]}
    metrics = {metric["key"] for metric in run["run"]["data"]["metrics"]}
    assert champion["version"] == "1" and tags["registry_decision"] == "promoted"
    assert {"val_accuracy", "test_accuracy"} <= metrics
    assert not (repo / "mlflow.db").exists() and not (repo / "mlartifacts").exists()
    assert (store / "mlflow.db").is_file() and any((store / "artifacts").rglob("model.pt"))
    assert "attention-pipeline" in listed and web == []  # the UI lists the run's experiment, all from the server


def ui_offline(uri: str) -> tuple[str, list[str]]:
    """The UI's home page in Chromium with every request off the server refused: its text, and
    what it asked of the network."""
    with offline_page(f"{uri}/") as (page, web):
        page.goto(f"{uri}/", wait_until="domcontentloaded")
        page.get_by_text("attention-pipeline", exact=True).first.wait_for(timeout=60_000)
        text = page.inner_text("body")
    return text, web
