"""The monitoring flow: judge what the served model was asked lately, and retrain when it drifted.

    python -m flows.monitoring        (prints its verdict; `python -m flows.schedule` runs it every hour)

Runs `pipeline.monitor` (the recent window of the prediction log against the validation and test
splits, in Evidently), publishes the verdict as the flow run's `monitoring-report` artifact (the
Evidently report itself is in the MLflow run of the `<experiment>-monitoring` experiment and in
`reports/monitoring.html`), and on `drift` (the embeddings, the answered classes, the novelty
scores or the images' brightness, contrast or sharpness moved, or the unknown rate passed its
threshold) starts the retraining flow as a subflow with the reasons (`monitoring.retrain: true`;
at most once per window, so a drift that lasts does not retrain every hour).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.prefect_api import reported_api_errors
from flows.retraining import retraining_flow
from pipeline import monitor
from pipeline.core.config import Config, load_config
from pipeline.core.errors import run_command
from pipeline.core.files import write_json
from pipeline.core.paths import project_root

STATE = "_monitoring.json"  # in the log folder (pyarrow skips names starting with "_"): the last retraining started


def markdown(verdict: monitor.Verdict, retraining: str | None) -> str:
    figures = "\n".join(f"| {key} | {value} |" for key, value in verdict.figures.items())
    lines = [
        f"# Monitoring: {verdict.verdict}", "", verdict.line(), "",
        f"Window {verdict.window_start} → {verdict.window_end}: {verdict.records} answers.",
        "", "| figure | value |", "|---|---|", figures or "| (none) | |", "",
        f"Retraining: {retraining or 'not started'}",
    ]  # fmt: skip
    return "\n".join(lines)


def retrained_recently(cfg: Config, now: datetime) -> str | None:
    """When monitoring last started a retraining, if within the current window."""
    state = cfg.prediction_log() / STATE
    if not state.is_file():
        return None
    last = datetime.fromisoformat(json.loads(state.read_text())["retraining_started"])
    return last.isoformat() if now - last < timedelta(hours=cfg.monitoring.window_hours) else None


@flow(name="monitoring", log_prints=True)
def monitoring_flow() -> monitor.Verdict:
    """Judge the recent window; on drift, start the retraining flow with the reasons."""
    cfg = load_config(project_root() / "params.yaml")
    logger = get_run_logger()
    verdict = monitor.run(cfg)
    logger.info(verdict.line())
    retraining = None
    if verdict.drift and cfg.monitoring.retrain:
        now = datetime.now(UTC)
        if earlier := retrained_recently(cfg, now):
            retraining = f"already started at {earlier}, within this window"
        else:
            write_json(cfg.prediction_log() / STATE, {"retraining_started": now.isoformat()})
            state = retraining_flow(reason="; ".join(verdict.reasons), return_state=True)
            retraining = f"{state.type.value.lower()}: {state.message}"
        logger.info("retraining %s", retraining)
        verdict.retraining = retraining
    create_markdown_artifact(markdown(verdict, retraining), key="monitoring-report", description=verdict.line())
    return verdict


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.monitoring", description=__doc__.splitlines()[0])
    parser.parse_args()
    run_command(report)


def report() -> None:
    """Run the monitoring flow and print its verdict."""
    with reported_api_errors():
        print(monitoring_flow().line())


if __name__ == "__main__":
    main()
