"""`python -m pipeline.tune`: a bounded Optuna study on the validation split, tracked in MLflow,
whose best settings land in params.yaml."""

import json
import shutil

import pytest
from mlflow import MlflowClient

from pipeline import tune
from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError
from tests.synthetic import prepared_project


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    with prepared_project(root, {"train": 30, "test": 10}, train={"precision": "fp32"}) as cfg:
        shutil.rmtree(cfg.paths.processed / "test")  # tuning must never need the test split
        params = cfg.root / "params.yaml"
        params.write_text("# my notes on this dataset\n" + params.read_text())
        result = tune.run(cfg, trials=4, minutes=10, epochs=2, write=True, fixed=frozenset({"train.augment.erasing"}))
        yield cfg, result, load_config()


def test_the_best_settings_of_the_trials_are_written_to_params_yaml_with_its_comments(tuned):
    cfg, result, after = tuned
    assert len(result["trials"]) == 4 and result["metric"] == "val_balanced_accuracy"  # register.metric
    finished = [t for t in result["trials"] if t["state"] == "COMPLETE"]
    assert result["best_value"] == max(t["value"] for t in finished)
    assert "train.augment.erasing" not in result["best_params"] and after.train.augment.erasing == 0.0  # --fixed
    for name, (_, low, high) in tune.SPACE.items():
        if name == "train.augment.erasing":
            continue
        value = result["best_params"][name]
        assert low <= value <= (high if high is not None else 2)  # 16-px images: shifts up to 2
    assert after.train.lr == pytest.approx(result["best_params"]["train.lr"], rel=1e-3)  # 4 significant digits
    assert after.model.dropout == pytest.approx(result["best_params"]["model.dropout"], rel=1e-3)
    assert after.train.augment.max_shift == result["best_params"]["train.augment.max_shift"]
    assert (cfg.root / "params.yaml").read_text().startswith("# my notes on this dataset\n")  # comments kept
    assert json.loads((cfg.paths.reports / "tuning.json").read_text()) == result


def test_every_trial_is_a_nested_mlflow_run_under_one_parent(tuned):
    cfg, result, _ = tuned
    client = MlflowClient(tracking_uri=f"sqlite:///{cfg.paths.mlflow_db}")  # the project's store, named
    experiment = client.get_experiment_by_name(f"{cfg.tracking.experiment}-tuning")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 4
    assert parents[0].info.artifact_uri.startswith(cfg.paths.mlflow_artifacts.as_uri())  # the project's store
    assert parents[0].data.metrics["best_val_balanced_accuracy"] == pytest.approx(result["best_value"])
    assert all("train.lr" in child.data.params for child in children)


def test_a_study_that_runs_out_of_time_says_so(tuned):
    cfg, _, _ = tuned
    with pytest.raises(PipelineError, match=r"--fixed train\.lrr: not searched"):
        tune.run(cfg, fixed=frozenset({"train.lrr"}))
    with pytest.raises(PipelineError, match=r"no trial finished within 0\.001 minutes"):
        tune.run(cfg, trials=2, minutes=0.001, epochs=40)  # 40 epochs take far longer than 0.06 s


def test_a_study_without_preprocessed_data_says_which_stage_to_run(project):
    with pytest.raises(PipelineError, match=r"meta.json: no preprocessed data; run the preprocess stage first"):
        tune.run(project, trials=1)
