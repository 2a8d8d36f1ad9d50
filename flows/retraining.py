"""The retraining flow: train again only when the data changed since the champion, and the newest
model version, were trained.

Started by its schedule, or by the monitoring flow with the reason (the served model's inputs
drifted, too many "unknown" answers, the images darker or blurrier): its report then names that
reason, and without new data it says what to do instead of retraining on the same images to the
same model (`advice`).

The data version is DVC's hash of the source dataset (`data.path`), computed now, compared with
the `data_version` tags of the registry's current champion and of its newest version (a challenger
already trained on this data and not promoted: another run would register the same model again).
Before retraining, what changed since
the champion's data (`pipeline.data_diff`) is published as the flow run's `data-changes` artifact.

    python -m flows.retraining [--set train.epochs=2 ...]     (prints its decision; cron- and CI-ready)
"""

from __future__ import annotations

import argparse
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, State

from flows.prefect_api import reported_api_errors
from flows.training import parse_overrides, training_flow
from pipeline import data_diff
from pipeline.core.config import Config, load_config
from pipeline.core.errors import PipelineError, run_command
from pipeline.core.paths import project_root
from pipeline.core.tracking import connect
from pipeline.core.versions import data_version
from pipeline.data.manifest_diff import DataDiff
from pipeline.model.aliases import current_champion
from pipeline.monitoring.image_quality import REASON


def trained_data_versions(model_name: str) -> tuple[str | None, tuple[str, str] | None]:
    """The data version the current champion was trained on (None without one), and the newest
    model version's number and data version (None without versions)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    champion = current_champion(client, model_name)
    versions = client.search_model_versions(f"name='{model_name}'")
    newest = max(versions, key=lambda version: int(version.version), default=None)
    return (
        None if champion is None else champion.tags.get("data_version"),
        None if newest is None else (newest.version, newest.tags.get("data_version")),
    )


def advice(reason: str | None, cfg: Config) -> str:
    """What to do, where monitoring found a drift and the data is the champion's: new labelled examples;
    and where the images themselves moved (darker, blurrier, noisier…), the camera first."""
    if not reason:
        return ""
    text = f": label examples of the new inputs and add them to {cfg.data.path}"
    if REASON in reason:
        text += (
            "; the images themselves moved: if a fault did that (exposure, focus, a dirty lens, sensor noise), "
            "repair the camera rather than teach the model the fault"
        )
    return text


@flow(name="retraining", log_prints=True)
def retraining_flow(overrides: dict[str, Any] | None = None, reason: str | None = None) -> State:
    """If the source's data version differs from the champion's and the newest version's, run the
    training flow; `reason`: why it was started (by monitoring), named in its report."""
    cfg = load_config(project_root() / "params.yaml")
    current = data_version(cfg)
    connect(cfg)
    trained_on, newest = trained_data_versions(cfg.register.model_name)
    logger = get_run_logger()
    why = f"started by monitoring ({reason}); " if reason else ""
    if reason:
        logger.info("started by monitoring: %s", reason)
    if current == trained_on:
        logger.info("data version %s is the champion's: nothing to retrain", current)
        return Completed(message=f"{why}no new data (data version {current}){advice(reason, cfg)}")
    if newest is not None and current == newest[1]:
        logger.info("data version %s is version %s's, not promoted: nothing to retrain", current, newest[0])
        return Completed(
            message=f"{why}no new data since version {newest[0]}, trained on it and not promoted (data version "
            f"{current}){advice(reason, cfg)}"
        )
    logger.info("data version %s differs from the champion's (%s): retraining", current, trained_on)
    changes = publish_changes(cfg) if trained_on else None
    summary = training_flow(overrides)
    what = f"{changes.summary()}; " if changes else ""
    return Completed(message=f"{why}retrained on new data ({current}: {what}{summary.decision})", data=summary)


def publish_changes(cfg: Config) -> DataDiff | None:
    """What changed since the champion's data, as the flow run's `data-changes` artifact (None when
    the champion's run logged no manifest)."""
    logger = get_run_logger()
    try:
        changes = data_diff.run(cfg, "champion", "workspace")
    except PipelineError as error:
        logger.warning("no data diff: %s", error)
        return None
    logger.info("data changes since the champion: %s", changes.summary())
    create_markdown_artifact(
        changes.markdown(), key="data-changes", description="What changed since the champion's data"
    )
    return changes


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.retraining", description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="pairs", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param of a retraining run: --set train.epochs=2 (repeatable)")  # fmt: skip
    args = parser.parse_args()
    run_command(lambda: report(args.pairs))


def report(pairs: list[str]) -> None:
    """Run the retraining flow with the `--set` pairs' overrides and print its decision; a run
    that did not complete is an error: the pipeline's own where it raised one (a stage's, a bad
    param, a server that did not answer: exit status 75), else the state's message."""
    with reported_api_errors():
        state = retraining_flow(parse_overrides(pairs), return_state=True)
    if not state.is_completed():
        cause = state.result(raise_on_failure=False)
        if isinstance(cause, PipelineError):
            raise cause
        raise PipelineError(f"retraining {state.type.value.lower()}: {state.message}")
    print(state.message)


if __name__ == "__main__":
    main()
