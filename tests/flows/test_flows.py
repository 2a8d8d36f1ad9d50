"""The Prefect flows on a real DVC repo, with Prefect's test harness (a temporary local server)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow import MlflowClient
from prefect.artifacts import Artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter
from prefect.settings import get_current_settings
from prefect.testing.utilities import prefect_test_harness

from flows.dvc_stage import StageFailed
from flows.schedule import retraining_deployment
from flows.training import LOCK, RETRIES, ValidationFailed, training_flow
from pipeline.core.config import load_config
from pipeline.core.errors import SERVICE_EXIT, PipelineError, exit_status
from pipeline.core.locks import file_lock
from tests.dvc_repo import STAGES, command_env, dvc, make_repo
from tests.synthetic import write_dataset

MODEL = "attention-classifier"


@pytest.fixture(scope="module", autouse=True)
def prefect_server():
    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return make_repo(tmp_path_factory.mktemp("flowrepo"))


@pytest.fixture
def in_repo(repo: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PIPELINE_ROOT", str(repo))
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):  # what another test's MLflow set
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(repo)
    return repo


def champion_version(repo: Path) -> str:
    uri = f"sqlite:///{repo / 'mlflow.db'}"
    return str(MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(MODEL, "champion").version)


def versions(repo: Path) -> list[str]:
    uri = f"sqlite:///{repo / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return sorted(str(v.version) for v in client.search_model_versions(f"name='{MODEL}'"))


@pytest.fixture(scope="module")
def first_flow(repo: Path):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIPELINE_ROOT", str(repo))
        for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):  # what another test's MLflow set
            patch.delenv(variable, raising=False)
        patch.chdir(repo)
        return training_flow()


def test_training_flow_runs_every_stage_and_registers_a_champion(in_repo, first_flow):
    assert first_flow.stages == dict.fromkeys(STAGES, "ran")
    uri = f"sqlite:///{in_repo / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert first_flow.registration["version"] == str(champion.version)
    assert first_flow.data_version == champion.tags["data_version"]
    assert "registry" in first_flow.text() and first_flow.registration["run_id"] in first_flow.markdown()
    assert first_flow.text().endswith("record this run: git add dvc.lock, then commit")  # DVC's advice, said once
    report = Artifact.get("training-report")
    assert report is not None and first_flow.registration["run_id"] in report.data
    saved = json.loads((in_repo / "reports" / "training_flow.json").read_text())
    assert saved["stages"] == first_flow.stages and set(saved["seconds"]) == set(STAGES)
    assert all(seconds > 0 for seconds in saved["seconds"].values())


def test_after_a_flow_run_dvc_is_up_to_date_and_a_rerun_skips_everything(in_repo, first_flow):
    assert "up to date" in dvc(in_repo, "status")
    again = training_flow()
    assert again.stages == dict.fromkeys(STAGES, "skipped")


def test_flow_parameters_override_params_and_rerun_only_what_they_affect(in_repo, first_flow):
    """An export key: the stages before export are skipped, export and register run. (The flow
    launching data-parallel training ranks is in the stop-at-once test below.)"""
    params = in_repo / "params.yaml"
    params.write_text("# the team's notes\n" + params.read_text())
    summary = training_flow({"export.parity_images": 7})
    assert [s for s, state in summary.stages.items() if state == "ran"] == ["export", "register"]
    assert load_config().export.parity_images == 7
    assert json.loads((in_repo / "metrics" / "export.json").read_text())["test_images"] == 7
    uri = f"sqlite:///{in_repo / 'mlflow.db'}"
    run = MlflowClient(tracking_uri=uri).get_run(summary.registration["run_id"])
    assert run.data.metrics["onnx_test_images"] == 7  # the model's own run, not a new one
    assert params.read_text().startswith("# the team's notes")
    assert "up to date" in dvc(in_repo, "status")


def test_a_second_flow_in_the_same_project_is_refused_while_one_runs(in_repo, first_flow):
    before = versions(in_repo)
    params = (in_repo / "params.yaml").read_text()
    with file_lock(in_repo / LOCK), pytest.raises(PipelineError, match=r"another training flow is running .*pid \d+"):
        training_flow({"train.epochs": 3})
    assert (in_repo / "params.yaml").read_text() == params and versions(in_repo) == before


def test_registration_retries_and_a_permanent_failure_leaves_the_champion(in_repo, first_flow, monkeypatch, tmp_path):
    monkeypatch.setitem(RETRIES, "register", 1)  # one retry shows it: each is a register process (~10 s CPU)
    before = champion_version(in_repo)
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", f"sqlite:///{tmp_path / 'a-file' / 'registry.db'}")
    state = training_flow({"register.min_delta": 0.5}, return_state=True)
    assert state.is_failed()
    with pytest.raises(StageFailed, match="registry .* failed while registering .*the champion is unchanged") as error:
        state.result()
    assert exit_status(error.value) == SERVICE_EXIT  # `python -m flows.training` says: try again later
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [state.state_details.flow_run_id]}))
    (register_run,) = [run for run in runs if run.name.startswith("register")]
    assert register_run.run_count == 1 + RETRIES["register"]
    monkeypatch.delenv("MLFLOW_REGISTRY_URI")
    assert champion_version(in_repo) == before


def test_an_error_the_user_must_fix_stops_the_flow_at_once_without_a_retry(in_repo, first_flow):
    params = (in_repo / "params.yaml").read_text()
    try:
        state = training_flow({"data.positive_class": "defekt", "train.processes": 2}, return_state=True)
    finally:
        (in_repo / "params.yaml").write_text(params)
    with pytest.raises(StageFailed, match=r"^params\.yaml: data\.positive_class 'defekt' is not a class of the data"):
        state.result()  # a data-parallel rank's own error, not its launcher's "process 0 of 2 failed"
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [state.state_details.flow_run_id]}))
    (train_run,) = [run for run in runs if run.name.startswith("train")]
    assert RETRIES["train"] > 0 and train_run.run_count == 1


def test_a_data_path_that_is_not_there_is_named_before_any_stage_runs(in_repo, first_flow):
    params = (in_repo / "params.yaml").read_text()
    try:
        with pytest.raises(PipelineError, match=r"^data\.path: .*/data/my_imgs is not a folder; point data\.path"):
            training_flow({"data.path": "data/my_imgs"})
    finally:
        (in_repo / "params.yaml").write_text(params)


def retrain_as_a_user_does(repo: Path, *args: str, on_the_server: bool = False) -> str:
    """`python -m flows.retraining` in the repo, in its own process; its one-line answer. It starts
    Prefect's temporary server, or with `on_the_server` reports to this module's (as with `make prefect-server`)."""
    env = {**command_env(), "PREFECT_HOME": str(repo / ".prefect")}
    if on_the_server:
        env["PREFECT_API_URL"] = get_current_settings().api.url
    done = subprocess.run(
        [sys.executable, "-m", "flows.retraining", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_retraining_skips_when_the_data_is_unchanged(in_repo, first_flow):
    before = versions(in_repo)
    assert retrain_as_a_user_does(in_repo, on_the_server=True).startswith("no new data (data version ")
    assert versions(in_repo) == before
    with get_client(sync_client=True) as client:  # the check itself is on record
        names = {client.read_flow(run.flow_id).name for run in client.read_flow_runs()}
    assert "retraining" in names


def test_retraining_retrains_when_an_image_is_added(in_repo, first_flow):
    before = versions(in_repo)
    write_dataset(in_repo / "data" / "images", {"train": 41}, seed=11)  # 40 images redrawn, one more per class
    dvc(in_repo, "add", "-q", "data/images")
    answer = retrain_as_a_user_does(in_repo, "--set", "register.min_delta=0.5")  # not promoted
    assert answer.startswith("retrained on new data (") and ": +1 bars, +1 columns, +1 squares, 120 changed; " in answer
    assert answer.endswith(")") and "; )" not in answer  # the registry's decision inside the brackets
    assert len(versions(in_repo)) == len(before) + 1
    assert "up to date" in dvc(in_repo, "status")
    assert champion_version(in_repo) != max(versions(in_repo), key=int)
    again = retrain_as_a_user_does(in_repo, on_the_server=True)  # its data has a model, not the champion: no other
    assert again.startswith(f"no new data since version {max(versions(in_repo), key=int)}, trained on it and not pro")
    assert len(versions(in_repo)) == len(before) + 1


def test_retraining_with_the_tracking_server_down_says_so_in_one_line_and_exits_75(in_repo):
    env = {
        **command_env(),
        "PREFECT_API_URL": get_current_settings().api.url,
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
    }
    done = subprocess.run(
        [sys.executable, "-m", "flows.retraining"], cwd=in_repo, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == SERVICE_EXIT, done.stderr[-3000:]  # cron: try again later
    assert done.stderr.strip().splitlines()[-1] == (
        "error: MLflow tracking server http://127.0.0.1:9 is unreachable (ConnectionError); start it or fix "
        "MLFLOW_TRACKING_URI"
    )


def test_corrupt_image_fails_the_flow_at_validation_before_any_training(tmp_path, monkeypatch, caplog):
    repo = make_repo(tmp_path / "bad")
    (repo / "data" / "images" / "train" / "bars" / "broken.png").write_bytes(b"\x89PNG not really")
    dvc(repo, "add", "-q", "data/images")
    monkeypatch.setenv("PIPELINE_ROOT", str(repo))
    monkeypatch.chdir(repo)
    with pytest.raises(ValidationFailed, match=r"every file decodes.*train/bars/broken\.png"):
        training_flow()
    failures = [r for r in caplog.records if r.name.startswith("prefect") and "bars/broken.png" in r.getMessage()]
    assert failures and not any(r.exc_info for r in failures)  # the failure's line, without Prefect's stack
    assert not (repo / "models" / "model.pt").exists()
    if (repo / "mlflow.db").exists():
        mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
        assert mlflow.search_runs(search_all_experiments=True).empty
    report = json.loads((repo / "reports" / "validation.json").read_text())
    assert not report["success"]
    table = Artifact.get("bad-files")
    assert table is not None and "train/bars/broken.png" in str(table.data)


def test_served_deployment_carries_the_configured_cron_and_time_zone(tmp_path, monkeypatch):
    params = yaml.safe_load((Path(__file__).parents[2] / "params.yaml").read_text())
    params["schedule"] = {"cron": "30 4 * * 2", "timezone": "America/Chicago"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    deployment = retraining_deployment(load_config(tmp_path / "params.yaml"))
    (schedule,) = deployment.schedules
    assert schedule.schedule.cron == "30 4 * * 2" and schedule.schedule.timezone == "America/Chicago"
    assert deployment.name == "scheduled-retraining"


def test_prefect_yaml_deployment_schedule_matches_params():
    root = Path(__file__).parents[2]
    deployments = yaml.safe_load((root / "prefect.yaml").read_text())["deployments"]
    (retraining,) = [d for d in deployments if d["entrypoint"].endswith(":retraining_flow")]
    (schedule,) = retraining["schedules"]
    cfg = load_config(root / "params.yaml")
    assert (schedule["cron"], schedule["timezone"]) == (cfg.schedule.cron, cfg.schedule.timezone)
