"""One DVC stage, reproduced from Python: DVC decides whether it is up to date and records it in
dvc.lock, so Prefect and `dvc repro` always tell the same story."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import SERVICE_EXIT, PipelineError, ServiceError

log = logging.getLogger(__name__)


class StageFailed(PipelineError):
    """A stage exited non-zero; the message is the stage's own one-line error when it printed one,
    else what it crashed with. `retry`: whether another try may pass (a service that failed, a
    crash, DVC's lock held); not for an error the user must fix first."""

    def __init__(self, message: str, retry: bool = True):
        super().__init__(message)
        self.retry = retry


class StageServiceFailed(StageFailed, ServiceError):
    """A stage exited SERVICE_EXIT: a server it needs did not answer (retried; a flow's command that
    ends with it exits SERVICE_EXIT too, for cron to try again later)."""


@dataclass(frozen=True)
class StageRun:
    stage: str
    ran: bool  # False: DVC found it up to date and skipped it
    output: str


def stage_env() -> dict[str, str]:
    """The environment for `dvc.yaml`'s `python -m ...` commands: this interpreter's folder first."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def crash(lines: list[str]) -> str | None:
    """The exception a stage's traceback ended with (`ValueError: ...`), or None."""
    if not any(line.startswith("Traceback (most recent call last)") for line in lines):
        return None
    raised = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception)\b", line)]
    return raised[-1][:300] if raised else None


def dvc_error(lines: list[str]) -> str | None:
    """DVC's own error as one line (e.g. a lock held by another run, with the holder's PID), or None."""
    for index, line in enumerate(lines):
        if line.startswith("ERROR: "):
            message = "DVC: " + line.removeprefix("ERROR: ")
            details = [rest.strip() for rest in lines[index + 1 :] if rest.strip()]
            return f"{message} {details[0]}" if message.endswith(":") and details else message
    return None


# DVC's advice after each stage that updated dvc.lock, for a person at a terminal: the flow's summary
# gives it once (flows/report.py)
DVC_HINTS = ("To track the changes with git, run:", "git add ", "To enable auto staging, run:",
             "dvc config core.autostage true", "Use `dvc push` to send your updates to remote storage.")  # fmt: skip


def reproduce(root: Path, stage: str, logger: logging.Logger | logging.LoggerAdapter = log) -> StageRun:
    """`dvc repro --single-item STAGE` in `root`, its output streamed to `logger` line by line (DVC's
    git advice left out: DVC_HINTS)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "--single-item", stage],
        cwd=root, env=stage_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines = []
    for line in process.stdout:
        line = line.rstrip()
        lines.append(line)
        if line and not line.strip().startswith(DVC_HINTS):
            logger.info(line)
    process.wait()
    output = "\n".join(lines)
    if process.returncode != 0:
        errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
        if errors:  # the stage's own one-line error (the first: a data-parallel rank's, before its launcher's)
            if f"exited with {SERVICE_EXIT}" in output:
                raise StageServiceFailed(errors[0])
            raise StageFailed(errors[0], retry=False)
        if raised := crash(lines):
            raise StageFailed(f"stage '{stage}' crashed: {raised} (the traceback is in the log above)")
        raise StageFailed(dvc_error(lines) or f"stage '{stage}' failed:\n" + output[-3000:])
    return StageRun(stage, f"Running stage '{stage}'" in output, output)
