"""Servers the project starts listen on the loopback interface unless the user says otherwise."""

import subprocess
from pathlib import Path

from prefect.settings import get_current_settings

PROJECT = Path(__file__).resolve().parents[1]


def test_mlflow_ui_target_binds_to_loopback():
    recipe = subprocess.run(["make", "-n", "mlflow-ui"], cwd=PROJECT, capture_output=True, text=True, check=True).stdout
    (command,) = [line for line in recipe.splitlines() if "mlflow ui" in line]
    assert "--host 127.0.0.1" in command


def test_prefects_local_server_binds_to_loopback():
    assert get_current_settings().server.api.host == "127.0.0.1"
