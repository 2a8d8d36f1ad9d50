"""Servers the project starts listen on the loopback interface unless the user says otherwise."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.settings import get_current_settings

PROJECT = Path(__file__).resolve().parents[1]


def test_mlflow_ui_target_binds_to_loopback():
    recipe = subprocess.run(["make", "-n", "mlflow-ui"], cwd=PROJECT, capture_output=True, text=True, check=True).stdout
    (command,) = [line for line in recipe.splitlines() if "mlflow ui" in line]
    assert "--host 127.0.0.1" in command


def test_prefects_local_server_binds_to_loopback():
    assert get_current_settings().server.api.host == "127.0.0.1"


@pytest.mark.parametrize(("module", "what"), [("pipeline.serve", "make serve"), ("pipeline.demo", "make demo")])
def test_a_taken_port_is_named_in_one_line_before_the_server_says_it_serves(module, what):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", module, "--port", str(port)], cwd=PROJECT, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1 and "serving" not in done.stdout
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: 127.0.0.1:{port} is taken (another {'server' if 'serve' in what else 'demo'}, {what}?): stop it, "
        "or pass --port"
    )
