"""Two runs at once: the second is refused with a clear message, and the MLflow store survives."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import pytest

from flows.dvc_stage import StageFailed, reproduce
from pipeline.core.locks import LockHeld, file_lock
from tests.dvc_repo import command_env, make_repo


def test_a_held_lock_is_refused_at_once_and_freed_when_its_holder_dies(tmp_path):
    lock = tmp_path / "x.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from pipeline.core.locks import file_lock\nfrom pathlib import Path\nimport time\n"
         f"with file_lock(Path({str(lock)!r})):\n    print('held', flush=True)\n    time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(LockHeld, match=f"pid {holder.pid} since"), file_lock(lock, wait=False):
        pass
    holder.kill()
    holder.wait()
    with file_lock(lock, wait=False):
        assert f"pid {__import__('os').getpid()}" in lock.read_text()


def test_a_second_run_of_a_busy_stage_is_refused_naming_the_running_process(tmp_path):
    repo = make_repo(tmp_path / "repo")
    first = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "train"], cwd=repo, env=command_env(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    for line in first.stdout:
        if "Running stage" in line:
            break
    with pytest.raises(StageFailed, match=rf"DVC: .* is busy, it is being blocked by: \(PID {first.pid}\)") as error:
        reproduce(repo, "validate")
    assert "\n" not in str(error.value)
    rest = first.stdout.read()
    assert first.wait() == 0, rest
    assert (repo / "models" / "model.pt").is_file()


WRITER = textwrap.dedent(
    """
    import sys
    import mlflow
    from pipeline.core.config import load_config
    from pipeline.core.tracking import connect

    experiment_id = connect(load_config())
    for index in range(10):
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"{sys.argv[1]}-{index}"):
            mlflow.log_param("writer", sys.argv[1])
            for step in range(5):
                mlflow.log_metrics({"loss": 1 / (step + 1), "accuracy": step / 5}, step=step)
    """
)


def test_two_writers_creating_and_filling_a_new_sqlite_store_at_once(project):
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, name], cwd=project.root, stderr=subprocess.PIPE, text=True)
        for name in ("a", "b")
    ]
    errors = [writer.communicate()[1] for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0], errors[-1][-2000:]
    with sqlite3.connect(project.paths.mlflow_db) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone() == (20,)
        assert db.execute("SELECT COUNT(*) FROM metrics").fetchone() == (200,)


def test_a_stage_run_from_the_flow_logs_its_output_without_dvcs_git_advice(tmp_path):
    """DVC ends each stage that updated dvc.lock with advice for a person at a terminal ("git add
    dvc.lock", "dvc push"): the flow's log leaves it out (its summary says it once); the stage's lines stay."""
    repo = make_repo(tmp_path / "repo")
    logged: list[str] = []

    class Lines:
        def info(self, line: str) -> None:
            logged.append(line)

    result = reproduce(repo, "validate", Lines())
    assert result.ran and "git add dvc.lock" in result.output  # DVC gave its advice
    assert any(line.startswith("validate: ") for line in logged)
    assert not any("git add" in line or "dvc push" in line or "autostage" in line for line in logged), logged
