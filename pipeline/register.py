"""Stage 6, register: a new model version in the MLflow registry; `champion` moves only if it wins.

Every evaluated and exported model becomes a version aliased `challenger` (its artifacts hold the
model file and its ONNX export). It becomes `champion` when its test
accuracy reaches `register.min_accuracy` and beats the current champion's by more than
`register.min_delta` (or there is no champion). The decision and its reason are tags on the
version and in `reports/registration.json`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from importlib.metadata import version as package_version
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature

from pipeline.core.config import Config, load_config
from pipeline.core.errors import PipelineError, run_cli
from pipeline.core.files import file_sha256, write_json
from pipeline.core.tracking import resume_run
from pipeline.data.splits import load_split
from pipeline.model import serving
from pipeline.model.model_file import ModelInfo, load_model

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
_REQUIREMENTS = ("torch", "torchvision", "timm", "numpy", "pydantic", "pyyaml", "pillow", "mlflow")


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(candidate: float, champion: float | None, min_accuracy: float, min_delta: float) -> Decision:
    """Whether a model with test accuracy `candidate` should replace the champion."""
    if candidate < min_accuracy:
        return Decision(False, f"test accuracy {candidate:.4f} is below register.min_accuracy {min_accuracy:.4f}")
    if champion is None:
        return Decision(True, f"no champion yet; test accuracy {candidate:.4f} reaches the minimum")
    if candidate > champion + min_delta:
        return Decision(
            True, f"test accuracy {candidate:.4f} beats the champion's {champion:.4f} by more than {min_delta}"
        )
    return Decision(
        False, f"test accuracy {candidate:.4f} does not beat the champion's {champion:.4f} by more than {min_delta}"
    )


def current_champion(client: MlflowClient, name: str) -> ModelVersion | None:
    """The model version aliased `champion`, or None when there is none (or no such model).

    Any other failure is raised: a registry that cannot answer must not look like one without a
    champion, or a worse model would be promoted.
    """
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as error:
        missing = error.error_code == "RESOURCE_DOES_NOT_EXIST" or (
            error.error_code == "INVALID_PARAMETER_VALUE" and "alias" in str(error) and "not found" in str(error)
        )
        if missing:
            return None
        raise


def champion_accuracy(client: MlflowClient, name: str) -> tuple[str | None, float | None]:
    """The current champion's version and test accuracy, or (None, None) when there is none."""
    champion = current_champion(client, name)
    if champion is None:
        return None, None
    accuracy = champion.tags.get("test_accuracy")
    if accuracy is None:
        accuracy = client.get_run(champion.run_id).data.metrics.get("test_accuracy")
    return str(champion.version), None if accuracy is None else float(accuracy)


def _pip_requirements() -> list[str]:
    return [f"{name}=={package_version(name)}" for name in _REQUIREMENTS]


def run(cfg: Config) -> dict:
    """Log the evaluated model as a new registered version and decide on the `champion` alias."""
    paths = cfg.paths
    eval_path = paths.metrics / "eval.json"
    if not eval_path.is_file():
        raise PipelineError(f"{eval_path}: no evaluation; run the evaluate stage first ('dvc repro evaluate')")
    evaluation = json.loads(eval_path.read_text())
    model, info = load_model(paths.model_file)
    if evaluation.get("model_sha256") != file_sha256(paths.model_file) or evaluation.get("run_id") != info.run_id:
        raise PipelineError(
            f"{eval_path}: evaluates another model than {paths.model_file} (or an unfinished evaluation); "
            "run the evaluate stage first ('dvc repro evaluate')"
        )
    export_path = paths.metrics / "export.json"
    exported = json.loads(export_path.read_text()) if export_path.is_file() else {}
    if exported.get("model_sha256") != evaluation["model_sha256"] or (
        not paths.onnx_file.is_file() or exported.get("onnx_sha256") != file_sha256(paths.onnx_file)
    ):
        raise PipelineError(
            f"{export_path}: no ONNX export of {paths.model_file}; run the export stage first ('dvc repro export')"
        )
    accuracy = evaluation["accuracy"]
    example = load_split(paths.processed / "test.pt").images[:2].numpy()
    wrapper = serving.AttentionClassifier()
    wrapper.model, wrapper.info = model, info
    signature = infer_signature(example, wrapper.predict(None, example))
    name = cfg.registry.model_name

    try:
        report = _register(cfg, info, accuracy, example, signature)
    except PipelineError:
        raise
    except Exception as error:  # MLflow and its stores raise many types; `champion` moves last, so it did not
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise PipelineError(
            f"MLflow registry {mlflow.get_registry_uri()} failed while registering ({first_line}); "
            "the champion is unchanged; retry, or check MLFLOW_REGISTRY_URI"
        ) from None
    write_json(paths.reports / "registration.json", report)
    log.info("register: %s version %s %s: %s", name, report["version"], report["decision"], report["reason"])
    return report


def _register(cfg: Config, info: ModelInfo, accuracy: float, example: np.ndarray, signature: ModelSignature) -> dict:
    """Log the model, register it as `challenger`, and move `champion` to it (last) if it wins."""
    name, paths = cfg.registry.model_name, cfg.paths
    code = Path(serving.__file__).resolve().parents[1]  # the whole `pipeline` package travels with the model
    # from the project root, so that the model records relative paths, not this machine's
    with resume_run(cfg, info.run_id) as active, contextlib.chdir(code.parent):
        client = MlflowClient()
        previous_version, previous_accuracy = champion_accuracy(client, name)  # before anything is written
        logged = mlflow.pyfunc.log_model(
            name="model",
            python_model=f"{code.name}/model/serving.py",  # MLflow's "models from code": nothing pickled
            artifacts={"model_file": os.path.relpath(paths.model_file), "onnx_model": os.path.relpath(paths.onnx_file)},
            code_paths=[code.name],
            signature=signature,
            input_example=example,
            pip_requirements=_pip_requirements(),
            registered_model_name=name,
        )
        new_version = str(logged.registered_model_version)
        decision = decide(accuracy, previous_accuracy, cfg.registry.min_accuracy, cfg.registry.min_delta)
        tags = {
            "test_accuracy": f"{accuracy:.6f}",
            "data_version": info.data_version or "unknown",
            "decision": "promoted" if decision.promote else "not promoted",
            "decision_reason": decision.reason,
        }
        if decision.promote and previous_version:
            tags["previous_champion"] = previous_version  # where `python -m pipeline.rollback` goes back to
        for key, value in tags.items():
            client.set_model_version_tag(name, new_version, key, value)
        client.set_registered_model_alias(name, CHALLENGER, new_version)
        mlflow.set_tags({"registered_version": new_version, "registry_decision": tags["decision"]})
        if decision.promote:
            client.set_registered_model_alias(name, CHAMPION, new_version)
        return {
            "model_name": name,
            "version": new_version,
            "run_id": active.info.run_id,
            "test_accuracy": accuracy,
            "previous_champion": {"version": previous_version, "test_accuracy": previous_accuracy},
            "champion": new_version if decision.promote else previous_version,
            "decision": tags["decision"],
            **asdict(decision),
        }


def main() -> None:
    run(load_config())


if __name__ == "__main__":
    run_cli(main)
