"""Move `champion` back to the version it replaced, and record why.

    python -m pipeline.rollback --reason "misclassifies boots since v7" [--to VERSION]

Each promotion tags the new champion with `previous_champion`; a rollback moves the alias there
(or to `--to`), tags the demoted version `rolled_back` (reason, time) and the restored one
`restored_from` (and, `--to` a version never champion before, `previous_champion`: the next plain
rollback undoes it), and writes `reports/rollback.json`.
"""

from __future__ import annotations

import argparse
import datetime
import logging

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.core.config import Config, load_config
from pipeline.core.errors import PipelineError, run_cli
from pipeline.core.files import write_json
from pipeline.core.tracking import connect
from pipeline.model.aliases import current_champion, move_champion

log = logging.getLogger(__name__)


def rollback(cfg: Config, reason: str, to_version: str | None = None) -> dict:
    """Move `champion` of `register.model_name` back; returns what was done."""
    if not reason.strip():
        raise PipelineError("rollback: give a --reason; it is recorded on the model versions")
    connect(cfg)
    client, name = MlflowClient(), cfg.register.model_name
    champion = current_champion(client, name)
    if champion is None:
        raise PipelineError(f"{name}: no champion to roll back; run the pipeline first")
    target = to_version or champion.tags.get("previous_champion")
    if not target:
        raise PipelineError(f"{name} version {champion.version}: no earlier champion recorded; pass --to VERSION")
    try:
        restored = client.get_model_version(name, target)
    except MlflowException:
        raise PipelineError(f"{name}: no version {target} in the registry; pass an existing --to VERSION") from None
    if str(target) == str(champion.version):
        raise PipelineError(f"{name} version {target} is already the champion")
    when = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    if not move_champion(client, name, str(champion.version), str(target)):
        now = current_champion(client, name)
        raise PipelineError(
            f"{name}: the champion moved to version {now.version if now else 'none'} while rolling back from "
            f"{champion.version}; nothing changed: check it, then run the rollback again"
        )
    client.set_model_version_tag(name, champion.version, "rolled_back", f"{when}: {reason}")
    client.set_model_version_tag(name, target, "restored_from", f"version {champion.version} at {when}: {reason}")
    if not restored.tags.get("previous_champion"):  # never champion before: a plain rollback comes back here
        client.set_model_version_tag(name, target, "previous_champion", str(champion.version))
    report = {"model_name": name, "from_version": str(champion.version), "to_version": str(target),
              "reason": reason, "at": when}  # fmt: skip
    write_json(cfg.paths.reports / "rollback.json", report)
    log.info("rollback: %s champion %s -> %s (%s)", name, champion.version, target, reason)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.rollback", description=__doc__.splitlines()[0])
    parser.add_argument("--reason", required=True, help="why; recorded as a tag on both versions")
    parser.add_argument("--to", dest="to_version", help="the version to make champion (default: the one replaced)")
    args = parser.parse_args()
    rollback(load_config(), args.reason, args.to_version)


if __name__ == "__main__":
    run_cli(main)
