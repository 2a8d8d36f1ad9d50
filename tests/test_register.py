import json

import pytest
from mlflow import MlflowClient

from pipeline import evaluate, export, preprocess, register, train, validate
from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError
from pipeline.core.tracking import connect
from pipeline.register import CHAMPION, decide
from pipeline.rollback import rollback


def test_first_model_above_threshold_becomes_champion():
    decision = decide(0.90, None, min_accuracy=0.85, min_delta=0.0)
    assert decision.promote and "no champion" in decision.reason


def test_better_model_becomes_champion():
    assert decide(0.91, 0.90, min_accuracy=0.85, min_delta=0.0).promote


def test_worse_or_equal_model_stays_challenger():
    assert not decide(0.89, 0.90, min_accuracy=0.85, min_delta=0.0).promote
    assert not decide(0.90, 0.90, min_accuracy=0.85, min_delta=0.0).promote


def test_gain_must_exceed_min_delta():
    assert not decide(0.905, 0.90, min_accuracy=0.0, min_delta=0.01).promote
    assert decide(0.915, 0.90, min_accuracy=0.0, min_delta=0.01).promote


@pytest.mark.parametrize("champion", [None, 0.5])
def test_below_threshold_is_never_promoted(champion):
    decision = decide(0.80, champion, min_accuracy=0.85, min_delta=0.0)
    assert not decision.promote and "below register.min_accuracy" in decision.reason


def registry_with_versions(cfg, count: int) -> MlflowClient:
    """`count` versions of the model, each promoted in turn as register does (tagged with the one it replaced)."""
    connect(cfg)
    client, name = MlflowClient(), cfg.registry.model_name
    client.create_registered_model(name)
    for version in range(1, count + 1):
        client.create_model_version(name, source=str(cfg.root))
        if version > 1:
            client.set_model_version_tag(name, str(version), "previous_champion", str(version - 1))
        client.set_registered_model_alias(name, CHAMPION, str(version))
    return client


def champion(client: MlflowClient, cfg) -> str:
    return str(client.get_model_version_by_alias(cfg.registry.model_name, CHAMPION).version)


def test_rollback_moves_champion_back_and_records_why(project):
    client = registry_with_versions(project, 3)
    report = rollback(project, "boots misread since v3")
    assert champion(client, project) == "2" and (report["from_version"], report["to_version"]) == ("3", "2")
    name = project.registry.model_name
    assert client.get_model_version(name, "3").tags["rolled_back"].endswith("boots misread since v3")
    assert "version 3" in client.get_model_version(name, "2").tags["restored_from"]
    assert json.loads((project.paths.reports / "rollback.json").read_text())["reason"] == "boots misread since v3"
    rollback(project, "again")
    assert champion(client, project) == "1"


def test_rollback_without_an_earlier_champion_or_to_a_missing_version_changes_nothing(project):
    client = registry_with_versions(project, 1)
    with pytest.raises(PipelineError, match="no earlier champion recorded; pass --to VERSION"):
        rollback(project, "why not")
    with pytest.raises(PipelineError, match="no version 9 in the registry"):
        rollback(project, "why not", to_version="9")
    with pytest.raises(PipelineError, match="give a --reason"):
        rollback(project, "  ", to_version="1")
    assert champion(client, project) == "1"


def test_an_evaluation_of_another_model_is_not_registered(project):
    validate.run(project)
    preprocess.run(project)
    train.run(project)
    evaluate.run(project)
    export.run(project)
    register.run(project)
    client = MlflowClient()
    before = champion(client, project)
    train.run(load_config(overrides={"train.epochs": 2}))  # a new model.pt; metrics/eval.json is the old model's
    with pytest.raises(PipelineError, match=r"eval\.json: evaluates another model"):
        register.run(project)
    assert champion(client, project) == before
    assert len(client.search_model_versions(f"name='{project.registry.model_name}'")) == 1
    evaluate.run(project)  # evaluated, but the ONNX file is the old model's
    with pytest.raises(PipelineError, match=r"export\.json: no ONNX export of .*model\.pt; run the export stage"):
        register.run(project)
    assert champion(client, project) == before
