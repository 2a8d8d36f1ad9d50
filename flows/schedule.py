"""Serve the retraining flow on the cron schedule and time zone of `schedule:` in params.yaml, and
the monitoring flow on `monitoring.cron` (hourly by default; it starts retraining itself on drift).

python -m flows.schedule        # runs until stopped; uses PREFECT_API_URL, or a local server
"""

from __future__ import annotations

import argparse

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

from flows.monitoring import monitoring_flow
from flows.prefect_api import reported_api_errors
from flows.retraining import retraining_flow
from pipeline.core.config import Config, load_config
from pipeline.core.errors import run_command


def retraining_deployment(cfg: Config) -> RunnerDeployment:
    """The scheduled deployment of the retraining flow."""
    return retraining_flow.to_deployment(
        name="scheduled-retraining",
        schedules=[Cron(cfg.schedule.cron, timezone=cfg.schedule.timezone)],
        description=f"Retrain when the data changed; cron '{cfg.schedule.cron}' ({cfg.schedule.timezone})",
    )


def monitoring_deployment(cfg: Config) -> RunnerDeployment:
    """The scheduled deployment of the monitoring flow."""
    return monitoring_flow.to_deployment(
        name="scheduled-monitoring",
        schedules=[Cron(cfg.monitoring.cron, timezone=cfg.schedule.timezone)],
        description=f"Judge the served model's recent inputs; cron '{cfg.monitoring.cron}' ({cfg.schedule.timezone})",
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.schedule", description=__doc__.splitlines()[0])
    parser.parse_args()
    cfg = load_config()
    with reported_api_errors():
        serve(retraining_deployment(cfg), monitoring_deployment(cfg))


if __name__ == "__main__":
    run_command(main)
