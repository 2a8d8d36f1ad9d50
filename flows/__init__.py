"""Prefect flows: the training flow (the main job) and scheduled retraining, over the DVC stages."""

from flows.prefect_api import allow_slow_startup
from flows.run_logs import drop_expected_tracebacks

allow_slow_startup()
drop_expected_tracebacks()
