"""`python -m pipeline.tune`: a bounded Optuna study on the validation split, tracked in MLflow,
whose best settings land in params.yaml."""

import json
import shutil

import optuna
import pytest
import torch
from mlflow import MlflowClient

from pipeline import tune
from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError
from tests.synthetic import prepared_project


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    # params.yaml's learning rate the lowest searched: in 27 steps it learns less than the sixth trial (seed 42) does
    train = {"precision": "fp32", "lr": 5e-4, "batch_size": 8}
    with prepared_project(root, {"train": 30, "test": 10}, train=train) as cfg:
        shutil.rmtree(cfg.paths.processed / "test")  # tuning must never need the test split
        params = cfg.root / "params.yaml"
        params.write_text("# my notes on this dataset\n" + params.read_text())
        result = tune.run(
            cfg, trials=6, minutes=10, epochs=3, write=True, fixed=frozenset({"train.augment.erasing"}), augment=True
        )
        yield cfg, result, load_config()


def test_the_best_settings_of_the_trials_are_written_to_params_yaml_with_its_comments(tuned):
    cfg, result, after = tuned
    assert len(result["trials"]) == 6 and result["metric"] == "val_balanced_accuracy"  # register.metric
    finished = [t for t in result["trials"] if t["state"] == "COMPLETE"]
    assert result["best_value"] == max(t["value"] for t in finished)
    first = result["trials"][0]  # params.yaml's own settings, scored like the others
    assert first["params_yaml"] and first["params"]["train.lr"] == 5e-4 and first["params"]["model.dropout"] == 0.1
    assert not result["best_is_params_yaml"] and result["best_value"] > first["value"]
    assert "train.class_weights" not in first["params"]  # balanced classes: nothing to balance
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
    assert len(parents) == 1 and len(children) == 6
    assert parents[0].info.artifact_uri.startswith(cfg.paths.mlflow_artifacts.as_uri())  # the project's store
    assert parents[0].data.metrics["best_val_balanced_accuracy"] == pytest.approx(result["best_value"])
    assert all("train.lr" in child.data.params for child in children)


def test_when_params_yaml_scores_best_nothing_is_written(tuned):
    cfg, _, _ = tuned
    before = (cfg.root / "params.yaml").read_text()
    result = tune.run(cfg, trials=1, minutes=10, epochs=1, write=True)  # params.yaml's trial alone
    assert result["best_is_params_yaml"] and (cfg.root / "params.yaml").read_text() == before
    assert set(result["best_params"]) == set(tune.SPACE) - tune.AUGMENT  # without --augment, where it looks is kept


@pytest.mark.parametrize(
    ("labels", "streamed", "fixed", "choices"),
    [
        ([0, 1, 2] * 10, False, set(), []),  # balanced: no weights to choose
        ([0] * 30 + [1] * 10, False, set(), ["train.class_weights", "train.balance"]),
        ([0] * 30 + [1] * 10, True, set(), ["train.class_weights"]),  # streamed data balances in the loss
        ([0] * 30 + [1] * 10, False, {"train.class_weights"}, ["train.balance"]),
    ],
)
def test_how_to_balance_the_classes_is_searched_only_where_they_are_imbalanced(
    project, labels, streamed, fixed, choices
):
    meta = {"image_size": 16, "classes": ["a", "b", "c"][: max(labels) + 1]}
    search = tune.plan_search(project, meta, torch.tensor(labels), streamed, frozenset(fixed))
    assert [name for name in search.searched if name in tune.CHOICES] == choices
    assert set(search.searched) == set(tune.SPACE) | set(choices)


def test_a_trial_without_class_weights_draws_no_way_to_balance_them(project):
    meta = {"image_size": 16, "classes": ["a", "b"]}
    search = tune.plan_search(project, meta, torch.tensor([0] * 30 + [1] * 10), False, frozenset())
    drawn = {"train.lr": 1e-3, "train.weight_decay": 1e-4, "train.label_smoothing": 0.1, "model.dropout": 0.1,
             "train.augment.erasing": 0.0, "train.augment.max_shift": 1}  # fmt: skip
    without = search.draw(optuna.trial.FixedTrial({**drawn, "train.class_weights": "none"}))
    with_weights = search.draw(
        optuna.trial.FixedTrial({**drawn, "train.class_weights": "balanced", "train.balance": "loss"})
    )
    assert "train.balance" not in without and with_weights["train.balance"] == "loss"
    assert search.baseline() == {**search.current, "train.balance": project.train.balance}


def test_each_range_stretches_to_hold_params_yaml_value(project):
    meta = {"image_size": 16, "classes": ["a", "b"]}
    search = tune.plan_search(project, meta, torch.tensor([0, 1]), False, frozenset())
    assert search.bounds("train.augment.max_shift") == (0, 2)  # an eighth of 16 px
    wide = tune.Search(16, {"train.lr": 0.1, "train.augment.max_shift": 5}, ("train.lr",), "balanced")
    assert wide.bounds("train.lr") == (5e-4, 0.1) and wide.bounds("train.augment.max_shift") == (0, 5)


def test_a_study_that_runs_out_of_time_says_so(tuned):
    cfg, _, _ = tuned
    with pytest.raises(PipelineError, match=r"--fixed train\.lrr: not searched"):
        tune.run(cfg, fixed=frozenset({"train.lrr"}))
    with pytest.raises(PipelineError, match=r"no trial finished within 0\.001 minutes"):
        tune.run(cfg, trials=2, minutes=0.001, epochs=40)  # 40 epochs take far longer than 0.06 s
    client = MlflowClient(tracking_uri=f"sqlite:///{cfg.paths.mlflow_db}")
    experiment = client.get_experiment_by_name(f"{cfg.tracking.experiment}-tuning")
    stopped = client.search_runs([experiment.experiment_id], "tags.stopped = 'time budget'")
    assert len(stopped) == 1 and stopped[0].info.status == "KILLED"  # stopped, not failed


def test_a_study_without_preprocessed_data_says_which_stage_to_run(project):
    with pytest.raises(PipelineError, match=r"meta.json: no preprocessed data; run the preprocess stage first"):
        tune.run(project, trials=1)
