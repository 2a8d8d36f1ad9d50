"""Prefect's run logs: a failure the pipeline explains in its own line comes without a traceback;
anything else (a bug) keeps it."""

import logging

import pytest

import flows  # noqa: F401  (installs the filter, as any flow's import does)
from flows.dvc_stage import StageFailed
from flows.run_logs import RUN_LOGGERS
from pipeline.core.errors import PipelineError


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.text.append(self.format(record))


@pytest.mark.parametrize("name", RUN_LOGGERS)
@pytest.mark.filterwarnings("ignore:Logger 'prefect:UserWarning")  # outside a flow run: nothing for Prefect's API
def test_an_expected_failure_is_one_line_and_a_bug_keeps_its_traceback(name):
    logger, lines = logging.getLogger(name), Lines()
    logger.addHandler(lines)
    try:
        for error in (StageFailed("train/bars/broken.png: cannot decode image"), PipelineError("params.yaml: bad key"),
                      KeyError("a bug")):  # fmt: skip
            try:
                raise error
            except Exception:
                logger.error("Task run failed with exception: %r", error, exc_info=True)
    finally:
        logger.removeHandler(lines)
    stage, param, bug = lines.text
    assert "broken.png" in stage and "Traceback" not in stage
    assert "bad key" in param and "Traceback" not in param
    assert "Traceback" in bug and "KeyError" in bug
