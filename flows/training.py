"""The training flow: validate → preprocess → train → evaluate → register.

Each step is a Prefect task that reproduces the DVC stage of the same name (`dvc repro
--single-item`), so the stage code is the one in `dvc.yaml`, DVC skips what is up to date, and
`dvc.lock` records every run: after the flow, `dvc status` is clean and `dvc repro` does nothing.

    python -m flows.training [--preset params.gpu.yaml] [--set train.epochs=2 ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from flows.dvc_stage import StageFailed, reproduce
from flows.prefect_api import reported_api_errors
from flows.report import RunSummary, bad_files
from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError, run_command
from pipeline.core.locks import LockHeld, file_lock
from pipeline.core.params_file import apply_overrides, read_preset
from pipeline.core.paths import project_root
from pipeline.data.image_folder import split_roots

STAGES = ("validate", "preprocess", "train", "evaluate", "export", "register")
LOCK = ".dvc/tmp/training-flow.lock"  # held by a running flow: a second one in the project is refused
# Steps that talk to MLflow retry with backoff when a service failed or the stage crashed, not on an
# error the user must fix first (`StageFailed.retry`); training resumes from its checkpoint on a retry.
RETRIES = {"train": 1, "evaluate": 2, "export": 2, "register": 3}


def worth_retrying(task, task_run, state) -> bool:  # Prefect's retry_condition_fn
    """Whether a failed stage may pass on another try."""
    return getattr(state.data, "retry", True)


class ValidationFailed(StageFailed):
    """The data broke a validation rule: the flow stops before any training."""


@task(cache_policy=NO_CACHE)
def run_stage(stage: str) -> str:
    """Reproduce one DVC stage; returns 'ran' or 'skipped' (DVC found it up to date)."""
    logger = get_run_logger()
    try:
        result = reproduce(project_root(), stage, logger)
    except StageFailed as error:
        if stage == "validate":
            raise ValidationFailed(str(error), retry=error.retry) from None
        raise
    state = "ran" if result.ran else "skipped"
    logger.info("stage %s %s", stage, state)
    return state


def _publish_bad_files(validation: dict) -> None:
    rows = bad_files(validation)
    if rows:
        create_table_artifact(rows, key="bad-files", description="Files that broke a validation rule")


@flow(name="training", log_prints=True)
def training_flow(overrides: dict[str, Any] | None = None) -> RunSummary:
    """Run the pipeline's stages in order; `overrides` ({"train.epochs": 2, ...}) are written to
    params.yaml first, as `dvc exp run -S` does. Publishes a markdown report artifact and writes
    the summary, with each stage's wall time, to `reports/training_flow.json`.

    One flow at a time per project: a second one is refused at once, naming the running one.
    """
    root = project_root()
    try:
        with file_lock(root / LOCK, wait=False):
            return _run_stages(root, overrides)
    except LockHeld as holder:
        raise PipelineError(
            f"another training flow is running in this project ({holder}); wait for it to finish"
        ) from None


def _run_stages(root: Path, overrides: dict[str, Any] | None) -> RunSummary:
    if overrides:
        apply_overrides(root, overrides)
    cfg = load_config(root / "params.yaml")
    if cfg.data.source == "imagefolder":  # DVC's own error for a missing dependency names neither key nor fix
        split_roots(cfg.source_path())
    states: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for stage in STAGES:
        step = run_stage.with_options(
            name=stage, retries=RETRIES.get(stage, 0), retry_delay_seconds=exponential_backoff(backoff_factor=2),
            retry_condition_fn=worth_retrying,
        )  # fmt: skip
        started = time.perf_counter()
        try:
            states[stage] = step(stage)
        finally:
            seconds[stage] = round(time.perf_counter() - started, 2)
            if stage == "validate":
                _publish_bad_files(RunSummary.read(cfg, states, seconds).validation)
    summary = RunSummary.read(cfg, states, seconds)
    summary.write(cfg.paths.reports / "training_flow.json")
    create_markdown_artifact(summary.markdown(), key="training-report", description="Training flow report")
    return summary


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`key=value` strings (values in YAML syntax) into an overrides dict."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise PipelineError(f"--set {pair}: expected key=value, e.g. --set train.epochs=2")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.training", description="Run the training flow.")
    parser.add_argument(
        "--preset",
        type=Path,
        metavar="FILE",
        help="override params from a YAML file laid out like params.yaml, e.g. params.gpu.yaml",
    )
    parser.add_argument("--set", dest="pairs", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param: --set train.epochs=2 (repeatable, wins over --preset)")  # fmt: skip
    args = parser.parse_args()
    run_command(lambda: report(args.preset, args.pairs))


def report(preset: Path | None, pairs: list[str]) -> None:
    """Run the training flow with the preset's and the `--set` pairs' overrides; print its summary."""
    overrides = {**(read_preset(preset) if preset else {}), **parse_overrides(pairs)}
    with reported_api_errors():
        summary = training_flow(overrides)
    print("\n" + summary.text())


if __name__ == "__main__":
    main()
