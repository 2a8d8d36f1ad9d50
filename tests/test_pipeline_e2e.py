"""The real pipeline, end to end: `dvc repro` in a temporary git repo on a small generated dataset,
with real DVC, Great Expectations and MLflow on SQLite."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
import torch
import yaml
from mlflow import MlflowClient
from PIL import Image

from pipeline.data.splits import load_split
from tests.dvc_repo import STAGES, dvc, make_repo, run, stages_run
from tests.servers import free_port, make_target, offline_page
from tests.synthetic import CLASSES, write_dataset

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
                 "plots/roc_pr.png", "plots/training_curves.png", "reports/validation.json",
                 "reports/registration.json"):  # fmt: skip
        assert (repo / path).is_file(), path
    evaluation = json.loads((repo / "metrics" / "eval.json").read_text())
    assert set(evaluation["per_class"]) == {"bars", "columns", "squares"}
    predictions = pd.read_csv(repo / "metrics" / "predictions.csv")
    assert evaluation["test_images"] == len(predictions) == 30
    assert evaluation["accuracy"] == pytest.approx((predictions["actual"] == predictions["predicted"]).mean())
    recalls = [m["recall"] for m in evaluation["per_class"].values()]
    assert evaluation["balanced_accuracy"] == pytest.approx(sum(recalls) / 3)
    assert 0 <= evaluation["roc_auc"] <= 1
    assert all(0 <= m["average_precision"] <= 1 for m in evaluation["per_class"].values())


def test_great_expectations_names_the_data_and_its_version(repo, first_repro):
    docs = repo / "reports" / "data_docs" / "validations"
    runs = {path.parent.parent.name for path in docs.rglob("*.html")}
    assert runs == {raw_data_hash(repo)}  # the validation run is named after the data version
    (files_page,) = (docs / "files_suite").rglob("*.html")
    assert "Data asset: images: files<br>" in files_page.read_text()  # the source (the folder's name), the table


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
    images = load_split(repo / "data" / "processed", "test").images[:4].numpy()
    out = model.predict(images)
    assert out["probabilities"].shape == (4, 3)
    assert set(out["class"]) <= {"bars", "columns", "squares"}
    torch.testing.assert_close(torch.tensor(out["attention"].sum(axis=(1, 2))), torch.ones(4))
    convs = [m for m in model.unwrap_python_model().model.modules() if isinstance(m, torch.nn.Conv2d)]
    layout = [conv.weight.is_contiguous(memory_format=torch.channels_last) for conv in convs if conv.in_channels > 1]
    assert layout and all(layout)  # served channels last: 1.2-1.6x faster on the CPU (BENCHMARKS.md)


def test_repro_right_after_is_a_no_op(repo, first_repro):
    assert "up to date" in dvc(repo, "status")
    assert stages_run(dvc(repo, "repro")) == set()


def test_new_decoding_code_that_decodes_alike_reruns_only_the_data_stages(repo, first_repro):
    code = repo / "pipeline" / "data" / "images.py"
    code.write_text(code.read_text() + "\n# a new version of the decoding code, the same pixels\n")
    assert stages_run(dvc(repo, "repro")) == {"validate", "preprocess"}  # not train onwards: same bytes out


def test_metrics_plots_and_dag_work(repo, first_repro):
    metrics = dvc(repo, "metrics", "show")
    assert "metrics/eval.json" in metrics and "accuracy" in metrics
    dvc(repo, "plots", "show", "-o", "dvc_plots")
    assert (repo / "dvc_plots" / "index.html").is_file()
    assert "register" in dvc(repo, "dag")


def test_predict_cli_uses_the_champion_and_writes_heatmaps(repo, first_repro, tmp_path):
    image = repo / "data" / "images" / "test" / "bars" / "000.png"
    done = run(repo, sys.executable, "-m", "pipeline.predict", str(image), "--heatmap", str(tmp_path))
    path, label, probability, heatmap, *unknown = done.stdout.strip().split("\t")
    assert path == str(image) and label in {"bars", "columns", "squares"} and 0 < float(probability) <= 1
    assert Path(heatmap).is_file() and unknown in ([], ["unknown"])  # "unknown" last, when the model says so
    logged = pd.read_parquet(repo / "logs" / "predictions")  # the prediction log has the answer
    assert (logged["source"] == "predict").any() and set(logged["class"]) <= {"bars", "columns", "squares"}
    quality = logged.loc[logged["source"] == "predict", ["brightness", "contrast", "sharpness"]]
    assert quality.notna().all().all() and quality["brightness"].between(0, 1).all()  # the camera's figures too


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encoded(image: Image.Image, format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def test_the_champion_is_served_over_http_from_image_files_and_refuses_bad_requests(repo, first_repro, tmp_path):
    image_file = repo / "data" / "images" / "test" / "bars" / "000.png"
    image = np.array(Image.open(image_file))[None, None]  # 1×1×16×16 uint8
    predict = [sys.executable, "-m", "pipeline.predict", "--precision", "fp32"]  # the served model's precision
    cli = run(repo, *predict, str(image_file)).stdout.split("\t")
    test_files = sorted((repo / "data" / "images" / "test").rglob("*.png"))
    by_cli = [line.split("\t") for line in run(repo, *predict, *map(str, test_files)).stdout.splitlines()]
    photo = encoded(Image.open(image_file).convert("RGB").resize((40, 40)), "JPEG")  # another size, mode, format
    bomb = encoded(Image.new("1", (9000, 9000)), "PNG")  # 81 million pixels declared, a few kB sent
    port = free_port()
    url = f"http://127.0.0.1:{port}/invocations"
    with make_target("serve", f"http://127.0.0.1:{port}/ping", tmp_path / "serve.log",
                     SERVE_PORT=str(port), MLFLOW_TRACKING_URI=f"sqlite:///{repo / 'mlflow.db'}"):  # fmt: skip
        as_array = requests.post(url, json={"inputs": image.tolist()}, timeout=60)
        as_files = requests.post(url, json={"inputs": [b64(image_file.read_bytes()), b64(photo)],
                                            "params": {"top_k": 2, "overlay": True}}, timeout=60)  # fmt: skip
        about = requests.get(f"http://127.0.0.1:{port}/version", timeout=10).json()
        whole_split = requests.post(url, json={"inputs": [b64(path.read_bytes()) for path in test_files]}, timeout=60)
        refused = {
            "not JSON": requests.post(url, data=b"{inputs", headers={"Content-Type": "application/json"}),
            "form data": requests.post(url, data={"inputs": "x"}),
            "no inputs": requests.post(url, json={"images": []}),
            "empty list": requests.post(url, json={"inputs": []}),
            "not base64": requests.post(url, json={"inputs": ["not base64!"]}),
            "not an image": requests.post(url, json={"inputs": [b64(b"%PDF-1.4 hello")]}),
            "empty file": requests.post(url, json={"inputs": [""]}),
            "decompression bomb": requests.post(url, json={"inputs": [b64(bomb)]}),
            "wrong shape": requests.post(url, json={"inputs": [[1, 2, 3]]}),
            "too many images": requests.post(url, json={"inputs": [b64(image_file.read_bytes())] * 257}),
            "unknown param": requests.post(url, json={"inputs": [b64(photo)], "params": {"temperature": 2}}),
        }  # fmt: skip
        still_serving = requests.post(url, json={"inputs": [b64(photo)]}, timeout=60)
    assert as_array.ok, as_array.text
    predictions = as_array.json()["predictions"]
    assert predictions["class"] == [cli[1]]
    assert np.array(predictions["attention"]).shape == (1, 4, 4)
    assert as_files.ok, as_files.text
    answer = as_files.json()["predictions"]
    assert answer["class"][0] == cli[1] and answer["probabilities"][0] == pytest.approx(predictions["probabilities"][0])
    answered = CLASSES.index(cli[1])  # the answer: the most probable class weighed by the class weights
    assert answer["probabilities"][0][answered] == pytest.approx(float(cli[2]), abs=1e-4)  # the CLI's figure
    first_top = answer["top_k"][0]
    assert (
        len(first_top) == 2
        and first_top[0]["probability"] == pytest.approx(max(answer["probabilities"][0]))
        and first_top[0]["probability"] >= first_top[1]["probability"]
    )
    served = whole_split.json()["predictions"]  # every test file: the same class and probability as predict's
    assert served["class"] == [line[1] for line in by_cli]
    chosen = [row[CLASSES.index(name)] for row, name in zip(served["probabilities"], served["class"], strict=True)]
    assert chosen == pytest.approx([float(line[2]) for line in by_cli], abs=1e-4)
    assert served["unknown"] == [line[-1] == "unknown" for line in by_cli] and len(served["novelty"]) == len(by_cli)
    assert about["unknown"].startswith("novelty over ")  # /version says when the model answers "unknown"
    overlays = [Image.open(io.BytesIO(base64.b64decode(text))) for text in answer["overlay"]]
    assert [o.size for o in overlays] == [(16, 16), (40, 40)]  # each image's own size
    assert about["name"] == "attention-classifier" and "champion" in about["aliases"] and about["classes"]
    statuses = {kind: (response.status_code, response.json()["error"]) for kind, response in refused.items()}
    assert {kind: status for kind, (status, _) in statuses.items()} == {
        "not JSON": 400, "form data": 415, "no inputs": 400, "empty list": 400, "not base64": 400,
        "not an image": 400, "empty file": 400, "decompression bomb": 413, "wrong shape": 400,
        "too many images": 413, "unknown param": 400,
    }  # fmt: skip
    assert all("\n" not in reason and reason for _, reason in statuses.values())
    assert "image 0: cannot decode image" in statuses["not an image"][1]
    assert "81,000,000 pixels in all" in statuses["decompression bomb"][1]  # refused from its header
    assert still_serving.ok


def test_the_demo_page_classifies_an_uploaded_image_in_a_real_browser(repo, first_repro, tmp_path):
    image = repo / "data" / "images" / "test" / "columns" / "003.png"
    cli = run(repo, sys.executable, "-m", "pipeline.predict", str(image)).stdout.rstrip().split("\t")
    expected = cli[1]
    flat = tmp_path / "flat.png"  # a plain grey square: nothing like bars, columns or squares on noise
    Image.new("L", (16, 16), 128).save(flat)
    camera_photo = tmp_path / "drone.jpg"
    Image.open(image).convert("RGB").resize((5472, 3648)).save(camera_photo, quality=85)
    assert run(repo, sys.executable, "-m", "pipeline.predict", str(flat)).stdout.rstrip().endswith("\tunknown")
    port = free_port()
    with make_target("demo", f"http://127.0.0.1:{port}/", tmp_path / "demo.log", timeout=180,
                     DEMO_PORT=str(port), MLFLOW_TRACKING_URI=f"sqlite:///{repo / 'mlflow.db'}"):  # fmt: skip
        # the page must work with no network: everything from the demo's own server
        with offline_page(f"http://127.0.0.1:{port}/", viewport={"width": 1400, "height": 1000}) as (page, web):
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#upload input[type=file]", state="attached", timeout=60_000)
            page.set_input_files("#upload input[type=file]", str(image))
            page.wait_for_selector("#overlay img", timeout=60_000)
            page.wait_for_function(f"document.querySelector('#top5').innerText.includes('{expected}')", timeout=30_000)
            top = page.inner_text("#top5").split("\n")
            about = page.inner_text("#model-info")
            overlay = page.locator("#overlay img").evaluate("img => [img.naturalWidth, img.naturalHeight]")
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
            known = page.inner_text("#answer")
            page.goto(f"http://127.0.0.1:{port}/")  # a fresh page: the upload holds one file again
            page.wait_for_selector("#upload input[type=file]", state="attached", timeout=60_000)
            page.set_input_files("#upload input[type=file]", str(flat))
            page.wait_for_function("document.querySelector('#answer').innerText.includes('Not sure')", timeout=30_000)
            unknown = page.inner_text("#answer")
            page.goto(f"http://127.0.0.1:{port}/")  # a drone camera's 20-Mpx frame: drawn at the page's size
            page.wait_for_selector("#upload input[type=file]", state="attached", timeout=60_000)
            page.set_input_files("#upload input[type=file]", str(camera_photo))
            page.wait_for_function("document.querySelector('#overlay img')?.naturalWidth > 0", timeout=60_000)
            camera_overlay = page.locator("#overlay img").evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert top[1] == expected  # the headline class: the one pipeline.predict gives
    assert set(top) & {"bars", "columns", "squares"} == {"bars", "columns", "squares"}  # the top classes, charted
    assert "attention-classifier version 1 (" in about and "champion" in about and "test accuracy" in about
    assert overlay[0] > 0 and overlay[1] > 0  # the attention overlay was drawn
    assert ("Not sure" in known) == (cli[-1] == "unknown")  # the page and predict agree on the test image
    assert "does not look like anything I was trained on" in unknown
    assert camera_overlay == [2048, 1365]  # its long side at overlay.LARGEST, not 5472 px sent to the browser
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    assert web == []  # nothing was asked of the network (fonts, scripts, analytics)


def test_an_experiment_in_a_temporary_copy_reruns_only_training_onwards_into_the_projects_store(repo, first_repro):
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "first run")  # dvc.lock with its metrics, as DVC users commit them
    client = mlflow_client(repo)
    experiment_id = client.get_experiment_by_name("attention-pipeline").experiment_id
    before = {r.info.run_id for r in client.search_runs([experiment_id])}
    output = dvc(repo, "exp", "run", "--temp", "-S", "train.epochs=2")
    assert stages_run(output) == {"train", "evaluate", "export", "register"}
    name = re.search(r"Ran experiment\(s\): (\S+)", output).group(1)
    diff = json.loads(dvc(repo, "exp", "diff", "HEAD", name, "--json"))
    assert diff["metrics"]["metrics/train.json"]["epochs"] == {"old": 1, "new": 2, "diff": 1}
    (new,) = [r for r in client.search_runs([experiment_id]) if r.info.run_id not in before]
    assert new.data.params["train.epochs"] == "2" and not list((repo / ".dvc" / "tmp").rglob("mlflow.db"))
    versions = client.search_model_versions("name='attention-classifier'")
    newest = max(versions, key=lambda v: int(v.version))
    champion = client.get_model_version_by_alias("attention-classifier", "champion").version
    assert newest.run_id == new.info.run_id
    assert (str(champion) == str(newest.version)) == (new.data.tags["registry_decision"] == "promoted")


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
