"""The real pipeline, end to end: `dvc repro` in a temporary git repo on a small generated dataset,
with real DVC, Great Expectations and MLflow on SQLite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests
import torch
import yaml
from mlflow import MlflowClient
from PIL import Image

from tests.dvc_repo import STAGES, dvc, make_repo, run, stages_run
from tests.servers import free_port, make_target
from tests.synthetic import write_dataset

SECRET = "s3cr3t-t0ken"


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A fresh git + DVC repository holding the project's pipeline and a `dvc add`-ed image folder,
    with a git remote whose URL carries a token."""
    root = make_repo(tmp_path_factory.mktemp("repo"))
    run(root, "git", "remote", "add", "origin", f"https://ci:{SECRET}@git.example.com/team/attention.git")
    return root


@pytest.fixture(scope="module")
def first_repro(repo: Path) -> str:
    return dvc(repo, "repro")


def mlflow_client(root: Path) -> MlflowClient:
    """A client of the repo's store, for tracking and registry (other tests set other stores)."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def raw_data_hash(root: Path) -> str:
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    (dep,) = [d for d in lock["stages"]["validate"]["deps"] if d["path"] == "data/images"]
    return dep["md5"]


def test_repro_runs_every_stage_and_writes_outputs(repo, first_repro):
    assert stages_run(first_repro) == set(STAGES)
    for path in ("models/model.pt", "models/model.onnx", "metrics/export.json",
                 "metrics/train.json", "metrics/eval.json", "metrics/history.csv",
                 "metrics/predictions.csv", "plots/confusion_matrix.png", "plots/attention_overlays.png",
                 "plots/training_curves.png", "reports/validation.json", "reports/registration.json"):  # fmt: skip
        assert (repo / path).is_file(), path
    evaluation = json.loads((repo / "metrics" / "eval.json").read_text())
    assert set(evaluation["per_class"]) == {"bars", "columns", "squares"}
    assert 0 <= evaluation["accuracy"] <= 1 and evaluation["test_images"] == 30


def test_mlflow_run_has_params_curves_artifacts_data_version_and_commit(repo, first_repro):
    client = mlflow_client(repo)
    (experiment,) = [e for e in client.search_experiments() if e.name == "attention-pipeline"]
    (run_info,) = client.search_runs([experiment.experiment_id])
    assert run_info.data.params["model.widths"] == "[8, 16]"
    assert run_info.data.tags["data_version"] == raw_data_hash(repo)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert run_info.data.tags["git_commit"].startswith(head)
    assert "test_accuracy" in run_info.data.metrics and "val_accuracy" in run_info.data.metrics
    artifacts = {a.path for folder in ("plots", "metrics") for a in client.list_artifacts(run_info.info.run_id, folder)}
    assert {"plots/confusion_matrix.png", "plots/attention_overlays.png", "metrics/eval.json"} <= artifacts
    assert experiment.artifact_location.startswith((repo / "mlartifacts").as_uri())


def test_first_model_is_champion_and_loads_with_attention(repo, first_repro):
    client = mlflow_client(repo)
    champion = client.get_model_version_by_alias("attention-classifier", "champion")
    report = json.loads((repo / "reports" / "registration.json").read_text())
    assert str(champion.version) == report["version"] and champion.tags["decision"] == "promoted"
    model = mlflow.pyfunc.load_model("models:/attention-classifier@champion")
    images = torch.load(repo / "data" / "processed" / "test.pt", weights_only=True)["images"][:4].numpy()
    out = model.predict(images)
    assert out["probabilities"].shape == (4, 3)
    assert set(out["class"]) <= {"bars", "columns", "squares"}
    torch.testing.assert_close(torch.tensor(out["attention"].sum(axis=(1, 2))), torch.ones(4))


def test_repro_right_after_is_a_no_op(repo, first_repro):
    assert "up to date" in dvc(repo, "status")
    assert stages_run(dvc(repo, "repro")) == set()


def test_metrics_plots_and_dag_work(repo, first_repro):
    metrics = dvc(repo, "metrics", "show")
    assert "metrics/eval.json" in metrics and "accuracy" in metrics
    dvc(repo, "plots", "show", "-o", "dvc_plots")
    assert (repo / "dvc_plots" / "index.html").is_file()
    assert "register" in dvc(repo, "dag")


def test_predict_cli_uses_the_champion_and_writes_heatmaps(repo, first_repro, tmp_path):
    image = repo / "data" / "images" / "test" / "bars" / "000.png"
    done = run(repo, sys.executable, "-m", "pipeline.predict", str(image), "--heatmap", str(tmp_path))
    path, label, probability, heatmap = done.stdout.strip().split("\t")
    assert path == str(image) and label in {"bars", "columns", "squares"} and 0 < float(probability) <= 1
    assert Path(heatmap).is_file()


def test_the_champion_is_served_over_http_with_its_attention_map(repo, first_repro, tmp_path):
    image_file = repo / "data" / "images" / "test" / "bars" / "000.png"
    image = np.array(Image.open(image_file))[None, None]  # 1×1×16×16 uint8
    expected = run(repo, sys.executable, "-m", "pipeline.predict", str(image_file)).stdout.split("\t")[1]
    port = free_port()
    with make_target("serve", f"http://127.0.0.1:{port}/ping", tmp_path / "serve.log",
                     SERVE_PORT=str(port), MLFLOW_TRACKING_URI=f"sqlite:///{repo / 'mlflow.db'}"):  # fmt: skip
        answer = requests.post(f"http://127.0.0.1:{port}/invocations", json={"inputs": image.tolist()}, timeout=60)
    assert answer.ok, answer.text
    predictions = answer.json()["predictions"]
    assert predictions["class"] == [expected]
    assert np.isclose(np.sum(predictions["probabilities"]), 1, atol=1e-5)
    attention = np.array(predictions["attention"])
    assert attention.shape == (1, 4, 4) and np.isclose(attention.sum(), 1, atol=1e-5)


def test_experiment_with_a_changed_param_reruns_only_training_onwards_into_the_same_store(repo, first_repro):
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "first run")  # dvc.lock with its metrics, as DVC users commit them
    output = dvc(repo, "exp", "run", "-S", "train.epochs=2")
    assert stages_run(output) == {"train", "evaluate", "export", "register"}
    diff = json.loads(dvc(repo, "metrics", "diff", "--json", "HEAD"))
    assert diff["metrics/train.json"]["epochs"] == {"old": 1, "new": 2, "diff": 1}
    client = mlflow_client(repo)
    runs = client.search_runs([client.get_experiment_by_name("attention-pipeline").experiment_id])
    assert sorted(r.data.params["train.epochs"] for r in runs) == ["1", "2"]
    report = json.loads((repo / "reports" / "registration.json").read_text())
    champion = str(client.get_model_version_by_alias("attention-classifier", "champion").version)
    newest = max(int(v.version) for v in client.search_model_versions("name='attention-classifier'"))
    assert report["version"] == str(newest)
    assert (champion == report["version"]) == report["promote"]


def test_experiment_in_a_temporary_copy_logs_to_the_projects_store(repo, first_repro):
    client = mlflow_client(repo)
    experiment_id = client.get_experiment_by_name("attention-pipeline").experiment_id
    before = len(client.search_runs([experiment_id]))
    dvc(repo, "exp", "run", "--temp", "-S", "train.lr=0.02")
    runs = client.search_runs([experiment_id])
    assert len(runs) == before + 1 and {r.data.params["train.lr"] for r in runs} >= {"0.02"}
    assert not list((repo / ".dvc" / "tmp").rglob("mlflow.db"))


def test_new_data_reruns_from_validate(repo, first_repro):
    write_dataset(repo / "data" / "images", {"train": 42}, seed=7)
    dvc(repo, "add", "-q", "data/images")
    status = dvc(repo, "status")
    assert "validate" in status and "changed deps" in status


def test_mlflow_holds_no_machine_path_and_no_secret(repo, first_repro, tmp_path):
    client = mlflow_client(repo)
    (experiment,) = [e for e in client.search_experiments() if e.name == "attention-pipeline"]
    texts = []
    for found in client.search_runs([experiment.experiment_id]):
        texts += [f"param {k}={v}" for k, v in found.data.params.items()]
        texts += [f"tag {k}={v}" for k, v in found.data.tags.items()]
        local = Path(
            mlflow.artifacts.download_artifacts(run_id=found.info.run_id, dst_path=str(tmp_path / found.info.run_id))
        )
        for path in local.rglob("*"):
            if path.is_file() and path.suffix in {"", ".json", ".yaml", ".txt", ".csv", ".py"}:
                lines = path.read_text(errors="replace").splitlines()
                # MLmodel's artifact_path is MLflow's own record of where its local store keeps artifacts
                texts += [f"{path.name}: {line}" for line in lines if not line.startswith("artifact_path: ")]
    for version in client.search_model_versions("name='attention-classifier'"):
        texts += [f"version tag {k}={v}" for k, v in version.tags.items()]
    assert texts
    leaks = [text for text in texts if str(repo) in text or str(Path.home()) in text or SECRET in text]
    assert not leaks, leaks[:5]
