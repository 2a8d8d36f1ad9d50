"""Prefect's logs of a failed task or flow run, without a traceback where the pipeline's own error
says all: a stage that failed (its one-line error), data that broke a validation rule, a bad param.
Prefect logs such a failure twice with the stack of its own engine (the stage ran in a process of its
own, so none of the stage's code is in it); the line that names the file or key and what to do stays."""

from __future__ import annotations

import logging

from pipeline.core.errors import PipelineError

RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")


class DropExpectedTracebacks(logging.Filter):
    """Keep every record; drop the traceback of a PipelineError (a failed stage is one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], PipelineError):
            record.exc_info, record.exc_text = None, None
        return True


def drop_expected_tracebacks() -> None:
    """Install the filter on Prefect's task and flow run loggers (once)."""
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropExpectedTracebacks) for f in logger.filters):
            logger.addFilter(DropExpectedTracebacks())
