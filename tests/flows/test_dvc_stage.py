"""How a failed DVC stage is reported and whether the training flow tries it again, on a real DVC repo
whose stages fail as the pipeline's do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.dvc_stage import StageFailed, reproduce
from pipeline.core.errors import SERVICE_EXIT, exit_status
from tests.dvc_repo import command_env

FAILURES = {
    "user": "from pipeline.core.errors import PipelineError, run_cli\n"
    "def main(): raise PipelineError(\"params.yaml: data.positive_class 'defekt' is not a class of the data\")\n"
    "run_cli(main)",
    "service": "from pipeline.core.errors import ServiceError, run_cli\n"
    "def main(): raise ServiceError('MLflow tracking server http://127.0.0.1:9 is unreachable')\n"
    "run_cli(main)",
    "crash": "import numpy\nnumpy.zeros((4, 4, 3)).squeeze(-1)",
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stages")
    for name, code in FAILURES.items():
        (root / f"{name}.py").write_text(code)
    stages = {name: {"cmd": f"python {name}.py", "deps": [f"{name}.py"]} for name in FAILURES}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    for args in (["init", "--no-scm", "-q"], ["config", "core.analytics", "false"]):
        subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=command_env(), check=True)
    return root


def test_an_error_the_user_must_fix_is_reported_as_printed_and_not_retried(repo):
    with pytest.raises(StageFailed) as error:
        reproduce(repo, "user")
    assert str(error.value) == "params.yaml: data.positive_class 'defekt' is not a class of the data"
    assert not error.value.retry and exit_status(error.value) == 1


def test_a_service_that_failed_is_retried(repo):
    with pytest.raises(StageFailed, match=r"^MLflow tracking server .* is unreachable$") as error:
        reproduce(repo, "service")
    assert error.value.retry and exit_status(error.value) == SERVICE_EXIT  # a flow's command: try again later


def test_a_crash_names_its_exception_in_one_line_and_is_retried(repo):
    with pytest.raises(StageFailed) as error:
        reproduce(repo, "crash")
    message = str(error.value)
    assert message.startswith("stage 'crash' crashed: ValueError: cannot select an axis to squeeze out")
    assert "\n" not in message and error.value.retry
