"""Prefect flows: the training flow (the main job) and scheduled retraining, over the DVC stages."""

from flows.run_logs import drop_expected_tracebacks

drop_expected_tracebacks()
