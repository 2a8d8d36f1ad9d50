"""The flows' commands and Prefect's API: a server that does not answer, or a temporary one that does
not start in time, is one line naming what to do and exit status 75 (try again later), with nothing
of the project touched; a temporary server gets longer than Prefect's 20 s to start."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.errors import SERVICE_EXIT
from tests.servers import free_port
from tests.synthetic import PROJECT


def command(module: str, cwd: Path, **variables: str) -> subprocess.CompletedProcess:
    """`python -m MODULE` in a project at `cwd` (its params.yaml only), Prefect's state in it."""
    dropped = ("PREFECT_", "PIPELINE_ROOT", "MLFLOW_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env |= {"PREFECT_HOME": str(cwd / ".prefect"), **variables}
    return subprocess.run([sys.executable, "-m", module], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copy(PROJECT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


@pytest.mark.parametrize("module", ["flows.training", "flows.schedule", "flows.worker"])
def test_a_prefect_server_that_does_not_answer_is_named_in_one_line(module, project):
    url, params = f"http://127.0.0.1:{free_port()}/api", (project / "params.yaml").read_bytes()
    done = command(module, project, PREFECT_API_URL=url)
    assert done.returncode == SERVICE_EXIT, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: the Prefect server at {url} did not answer: start it (make prefect-server), "
        "or unset PREFECT_API_URL to run on a temporary local server"
    )
    assert "Traceback" not in done.stderr
    assert {path.name for path in project.iterdir()} <= {"params.yaml", ".prefect"}
    assert (project / "params.yaml").read_bytes() == params


def test_a_temporary_server_that_does_not_start_in_time_names_the_setting_to_raise(project):
    done = command("flows.retraining", project, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="0")
    assert done.returncode == SERVICE_EXIT, done.stderr[-2000:]
    assert "error: Prefect's temporary local server did not start within 0 s (a busy machine?): try again, raise " \
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in done.stderr  # fmt: skip
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("given", "expected"), [(None, 120), ("45", 45)])
def test_a_temporary_server_gets_two_minutes_to_start_unless_the_environment_says(given, expected, project):
    script = "import flows; from prefect.settings import get_current_settings as s; " \
             "print(s().server.ephemeral.startup_timeout_seconds)"  # fmt: skip
    variables = {} if given is None else {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": given}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | variables
    done = subprocess.run([sys.executable, "-c", script], cwd=project, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) == expected
