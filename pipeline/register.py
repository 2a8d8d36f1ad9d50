"""Stage 6, register: a new model version in the MLflow registry; `champion` moves only on a fair win.

Every evaluated and exported model becomes a version aliased `challenger` (its artifacts hold the
model file and its ONNX export). It becomes `champion` only when
- it clears the floor: with `register.min_accuracy: auto` (default) it beats always answering the
  test split's most common class in `register.metric`, significantly (the test below), so a model
  that learned nothing never serves; with a number, its test accuracy reaches that number;
- it answers the champion's task: the same class names in the same order, input channels and
  image size (else it stays a challenger: another task belongs under another `register.model_name`);
- on the same test images (this run's test split, less the images the champion trained or
  validated on: its logged manifest split by the content rule; scored by both models' own files),
  it beats the champion in `register.metric` (accuracy, balanced_accuracy or macro_f1) by more than
  `register.min_delta`, significantly: p < `register.max_p_value` (null: no test) in an exact
  McNemar test of the images only one of the two gets right (accuracy) or a paired permutation
  test of the metric (the others).
With no champion yet, the floor alone decides. The champion's accuracy recorded when it was
registered is kept as history only. The comparison, decision and reason are tags on the version,
metrics and tags of the MLflow run, and in `reports/registration.json`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import os
from dataclasses import asdict, dataclass
from importlib.metadata import version as package_version
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import ModelSignature

from pipeline.core.config import Config, RegisterConfig, load_config
from pipeline.core.errors import PipelineError, ServiceError, first_line, run_cli
from pipeline.core.files import file_sha256, write_json
from pipeline.core.tracking import resume_run
from pipeline.data.images import as_picture
from pipeline.data.splits import TensorSplit, load_split
from pipeline.model import pyfunc
from pipeline.model.aliases import CHALLENGER, current_champion, move_champion
from pipeline.model.champion import Comparison, champion_model, compare, seen_by, task_difference
from pipeline.model.model_file import ModelInfo, load_model
from pipeline.model.network import AttentionCNN
from pipeline.training.runtime import predict_batches, select_runtime

log = logging.getLogger(__name__)

# what the registered model's code imports (tests/test_register.py checks); overlays need matplotlib
_REQUIREMENTS = ("torch", "torchvision", "timm", "numpy", "pydantic", "pyyaml", "pillow", "mlflow", "matplotlib")


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(
    accuracy: float, comparison: Comparison | None, policy: RegisterConfig, baseline: Comparison | None = None
) -> Decision:
    """Whether a model with test accuracy `accuracy` replaces the champion it was `comparison`-ed with
    (None: there is no champion yet); `baseline`: the model against always answering the test split's
    most common class, the floor of `register.min_accuracy: auto`."""
    if policy.min_accuracy == "auto":
        if baseline is None:
            raise ValueError("register.min_accuracy auto needs the comparison with the constant answer")
        said = (
            f"{policy.metric} {baseline.challenger_score:.4f} vs {baseline.champion_score:.4f} for always answering "
            f"{baseline.champion_version} on {baseline.images} test images, {baseline.test} p = {baseline.p_value:.3g}"
        )
        if baseline.gain <= 0 or not significant(baseline, policy):
            return Decision(False, f"no significant gain over always answering the most common test class ({said})")
        floor = f"beats always answering the most common test class ({said})"
    elif accuracy < policy.min_accuracy:
        return Decision(False, f"test accuracy {accuracy:.4f} is below register.min_accuracy {policy.min_accuracy:.4f}")
    else:
        floor = f"test accuracy {accuracy:.4f} reaches the minimum"
    if comparison is None:
        return Decision(True, f"no champion yet; {floor}")
    if comparison.gain <= policy.min_delta:
        return Decision(False, f"does not beat the champion by more than {policy.min_delta} {comparison.summary()}")
    if not significant(comparison, policy):
        return Decision(False, f"not a significant win (p ≥ {policy.max_p_value}) {comparison.summary()}")
    return Decision(True, f"beats the champion by {comparison.gain:.4f} {comparison.summary()}")


def significant(comparison: Comparison, policy: RegisterConfig) -> bool:
    """Whether `comparison`'s difference passes `register.max_p_value` (always, with no test)."""
    return policy.max_p_value is None or comparison.p_value < policy.max_p_value


def constant_baseline(cfg: Config, predicted: np.ndarray, test: TensorSplit, classes: list[str]) -> Comparison:
    """The model's answers `predicted` on the test split against always answering its most common
    class (whose quoted name stands where a comparison names the champion's version)."""
    true = test.labels.numpy()
    common = int(np.bincount(true).argmax())
    return compare(true, predicted, np.full_like(true, common), repr(classes[common]), cfg.register.metric)


def recorded_accuracy(client: MlflowClient, champion: ModelVersion) -> float | None:
    """The champion's test accuracy as recorded when it was registered (history: not compared)."""
    accuracy = champion.tags.get("test_accuracy")
    if accuracy is None:
        accuracy = client.get_run(champion.run_id).data.metrics.get("test_accuracy")
    return None if accuracy is None else float(accuracy)


def predicted_classes(model: AttentionCNN, info: ModelInfo, test: TensorSplit, cfg: Config) -> np.ndarray:
    """The class `model` gives each test image by its own rule, on the device and precision evaluation uses."""
    runtime = select_runtime(cfg.train.device, cfg.train.precision, backbone=cfg.model.backbone)
    model = runtime.prepare(copy.deepcopy(model))
    batch = runtime.scoring_batch(test.images, cfg.evaluate.batch_size)
    logits = predict_batches(model, test.images, batch, runtime).logits
    return info.rule.classes(logits.softmax(1).numpy(), info.classes)


def judge(cfg: Config, model: AttentionCNN, info: ModelInfo, test: TensorSplit, champion: ModelVersion | None,
          accuracy: float) -> tuple[Decision, Comparison | None]:  # fmt: skip
    """The decision on `champion`, with the comparison on the same test images it rests on."""
    answers = None  # the challenger's classes for the whole test split, scored once for both uses
    baseline = None
    if cfg.register.min_accuracy == "auto":
        answers = predicted_classes(model, info, test, cfg)
        baseline = constant_baseline(cfg, answers, test, info.classes)
    if champion is None:
        return decide(accuracy, None, cfg.register, baseline), None
    version = str(champion.version)
    try:
        champion_net, champion_info = champion_model(cfg.register.model_name, version)
    except Exception as error:  # any champion this code cannot load or read: never replace it unseen
        reason = first_line(error, 300)
        return Decision(False, f"the champion (version {version}) cannot be scored here ({reason})"), None
    if difference := task_difference(info, champion_info):
        return Decision(False, difference), None
    unseen, left_out = unseen_by(champion, test, cfg), None
    if unseen is not None:
        test, left_out = test.subset(unseen), int((~unseen).sum())
        answers = None if answers is None else answers[unseen.numpy()]
    if not len(test.labels):
        reason = (
            f"the champion (version {version}) trained on every test image: no fair comparison; add new test images"
        )
        return Decision(False, reason), None
    challenger = predicted_classes(model, info, test, cfg) if answers is None else answers
    incumbent = predicted_classes(champion_net, champion_info, test, cfg)
    comparison = compare(test.labels.numpy(), challenger, incumbent, version, cfg.register.metric)
    comparison = dataclasses.replace(comparison, left_out=left_out)
    return decide(accuracy, comparison, cfg.register, baseline), comparison


def unseen_by(champion: ModelVersion, test: TensorSplit, cfg: Config) -> torch.Tensor | None:
    """Which test images the champion never trained or validated on (a boolean mask), or None when its
    training images are unknown, so that none are left out."""
    seen = seen_by(MlflowClient(), champion.run_id)
    if seen is None or test.paths is None:
        return None
    manifest = pd.read_csv(cfg.paths.manifest, usecols=["path", "sha256"]).set_index("path")["sha256"]
    return torch.tensor([manifest[path] not in seen for path in test.paths], dtype=torch.bool)


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
    test = load_split(paths.processed, "test", cfg.train.loader)
    example = [pyfunc.png_base64(as_picture(image)) for image in test.images[:2].numpy()]  # HTTP input
    signature = pyfunc.SIGNATURE
    name = cfg.register.model_name

    try:
        report = _register(cfg, model, info, test, accuracy, example, signature)
    except PipelineError:
        raise
    except Exception as error:  # MLflow and its stores raise many types; `champion` moves last, so it did not
        reason = first_line(error)
        raise ServiceError(
            f"MLflow registry {mlflow.get_registry_uri()} failed while registering ({reason}); "
            "the champion is unchanged; retry, or check MLFLOW_REGISTRY_URI"
        ) from None
    write_json(paths.reports / "registration.json", report)
    log.info("register: %s version %s %s: %s", name, report["version"], report["decision"], report["reason"])
    return report


MOVE_TRIES = 3  # decisions in a row that may find the champion moved before the move


def own_version(client: MlflowClient, name: str, run_id: str) -> str | None:
    """The version this run already registered (a retried registration), if it is complete."""
    found = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    ready = [int(v.version) for v in found if v.status == "READY"]
    return str(max(ready)) if ready else None


def _register(
    cfg: Config, model: AttentionCNN, info: ModelInfo, test: TensorSplit, accuracy: float,
    example: list[str], signature: ModelSignature,
) -> dict:  # fmt: skip
    """Log the model (once per run: a retry finds its version), register it as `challenger`, then
    decide against the champion and move `champion` to it only from the champion decided against:
    if another registration or a rollback moved it meanwhile, decide again against the new one."""
    name, paths = cfg.register.model_name, cfg.paths
    code = Path(pyfunc.__file__).resolve().parents[1]  # the whole `pipeline` package travels with the model
    # from the project root, so that the model records relative paths, not this machine's
    with resume_run(cfg, info.run_id) as active, contextlib.chdir(code.parent):
        client = MlflowClient()
        new_version = own_version(client, name, active.info.run_id)
        if new_version is None:
            logged = mlflow.pyfunc.log_model(
                name="model",
                python_model=f"{code.name}/model/pyfunc.py",  # MLflow's "models from code": nothing pickled
                artifacts={"model_file": os.path.relpath(paths.model_file),
                           "onnx_model": os.path.relpath(paths.onnx_file)},
                code_paths=[code.name],
                signature=signature,
                input_example=example,
                pip_requirements=_pip_requirements(),
                registered_model_name=name,
            )  # fmt: skip
            new_version = str(logged.registered_model_version)
        client.set_registered_model_alias(name, CHALLENGER, new_version)
        data_changes = mlflow.get_run(active.info.run_id).data.tags.get("data_changes")  # the train stage's
        for _ in range(MOVE_TRIES):
            champion = current_champion(client, name)
            previous_version = str(champion.version) if champion else None
            if previous_version == new_version:  # a retry after its own move
                decision, comparison = (
                    Decision(False, f"version {new_version} of this run is already the champion"),
                    None,
                )
                break
            decision, comparison = judge(cfg, model, info, test, champion, accuracy)
            tags = version_tags(accuracy, info, data_changes, decision, comparison, previous_version)
            for key, value in tags.items():
                client.set_model_version_tag(name, new_version, key, value)
            if not decision.promote or move_champion(client, name, previous_version, new_version):
                break
            log.warning("register: the champion moved from version %s meanwhile; deciding again", previous_version)
        else:
            decision = Decision(False, f"the champion moved {MOVE_TRIES} times while deciding; run register again")
            client.set_model_version_tag(name, new_version, "decision", "not promoted")
            client.set_model_version_tag(name, new_version, "decision_reason", decision.reason)
        verdict = "promoted" if decision.promote else "not promoted"
        mlflow.set_tags({"registered_version": new_version, "registry_decision": verdict,
                         "registry_reason": decision.reason[:5000]})  # fmt: skip
        if comparison:
            mlflow.log_metrics({f"registry.{key}": float(value) for key, value in comparison.figures().items()})
        return {
            "model_name": name,
            "version": new_version,
            "run_id": active.info.run_id,
            "test_accuracy": accuracy,
            "data": {"version": info.data_version, "changes": data_changes},
            "previous_champion": {
                "version": previous_version,
                "recorded_test_accuracy": recorded_accuracy(client, champion) if champion else None,
            },
            "comparison": asdict(comparison) if comparison else None,
            "champion": new_version if decision.promote else previous_version,
            "decision": verdict,
            **asdict(decision),
        }


def version_tags(
    accuracy: float, info: ModelInfo, data_changes: str | None, decision: Decision,
    comparison: Comparison | None, previous_version: str | None,
) -> dict[str, str]:  # fmt: skip
    """What a registered version records about itself and the decision on it."""
    tags = {
        "test_accuracy": f"{accuracy:.6f}",
        "data_version": info.data_version or "unknown",
        **({"data_changes": data_changes} if data_changes else {}),
        "decision": "promoted" if decision.promote else "not promoted",
        "decision_reason": decision.reason,
        **comparison_tags(comparison),
    }
    if decision.promote and previous_version:
        tags["previous_champion"] = previous_version  # where `python -m pipeline.rollback` goes back to
    return tags


def comparison_tags(comparison: Comparison | None) -> dict[str, str]:
    """The comparison as version tags (empty without one)."""
    if comparison is None:
        return {}
    figures = {key: f"{value:.6g}" for key, value in comparison.figures().items()}
    return {"compared_with_version": comparison.champion_version, **figures}


def main() -> None:
    run(load_config())


if __name__ == "__main__":
    run_cli(main)
