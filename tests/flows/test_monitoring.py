"""Closing the loop as it would happen: the champion served, traffic like its training images, then a
switched input stream; the monitoring flow (Prefect's test harness) judges each window from the
prediction log the server wrote, and starts the retraining flow on drift."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import requests
import uvicorn
import yaml
from mlflow import MlflowClient
from PIL import Image
from prefect.artifacts import Artifact
from prefect.settings import get_current_settings
from prefect.testing.utilities import prefect_test_harness

from flows.monitoring import monitoring_flow
from pipeline import evaluate, export, monitor, register, serve, train
from pipeline.core.config import load_config
from pipeline.core.tracking import connect
from pipeline.data.outliers import outlier_set
from pipeline.monitoring import prediction_log
from pipeline.monitoring.image_quality import QUALITY
from tests.servers import free_port
from tests.synthetic import prepared_project, synthetic_image

SETTINGS = {
    "train": {"epochs": 6, "batch_size": 32, "precision": "fp32", "unknown": {"accept": 0.95, "neighbours": 5,
              "bank": 400}},
    "data": {"val_fraction": 0.4},
    # a test-sized window: at 0.55 a small window's domain classifier is noise (see the guide)
    "monitoring": {"min_records": 300, "embedding_auc": 0.6},
}  # fmt: skip


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    root = tmp_path_factory.mktemp("monitoring")
    with prepared_project(root, {"train": 200, "test": 50}, **SETTINGS) as cfg:
        train.run(cfg)
        evaluate.run(cfg)
        export.run(cfg)
        report = register.run(cfg)
        with prefect_test_harness(server_startup_timeout=90):
            yield cfg, report["version"]


def png(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze()).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def like_training(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [png(synthetic_image(index % 3, 16, rng)) for index in range(count)]


def unlike_training(count: int) -> list[str]:
    photos = outlier_set("photos", 16, 1, count // 2, seed=5)
    textures = outlier_set("textures", 16, 1, count - count // 2, seed=6)
    return [png(image) for image in np.concatenate([photos, textures])]


def send(cfg, version: str, batches: list[list[str]]) -> None:
    """Serve the champion (as `make serve` does: logging to `monitoring.log`), post the batches, stop."""
    connect(cfg)
    uri = f"models:/{cfg.register.model_name}/{version}"
    app = serve.create_app(uri, {"name": cfg.register.model_name, "version": version}, serve.Limits(1, 4, 60),
                           cfg.prediction_log(), cfg.monitoring.log_images)  # fmt: skip
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        for batch in batches:
            answered = requests.post(f"http://127.0.0.1:{port}/invocations", json={"inputs": batch}, timeout=60)
            assert answered.ok, answered.text
            sent_back = answered.json()["predictions"]
            assert not {"embedding", *QUALITY} & set(sent_back)  # logged, not sent back
    finally:
        server.should_exit = True  # the shutdown writes what the server still holds
        thread.join(30)


def last_monitoring_run(cfg) -> tuple[str, set[str]]:
    """The newest MLflow run of the monitoring experiment: its verdict tag and its artifacts."""
    connect(cfg)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(f"{cfg.tracking.experiment}-monitoring").experiment_id
    (run,) = client.search_runs([experiment], order_by=["start_time DESC"], max_results=1)
    return run.data.tags["verdict"], {artifact.path for artifact in client.list_artifacts(run.info.run_id)}


def test_an_unchanged_stream_passes_and_a_switched_one_is_caught_and_retrains(champion):
    cfg, version = champion
    send(cfg, version, [like_training(100, seed) for seed in range(10, 16)])
    logged = prediction_log.read(cfg.prediction_log(), datetime.now(UTC) - timedelta(hours=1))
    assert len(logged) == 600 and set(logged["version"].to_pylist()) == {version}
    assert all(logged[name].null_count == 0 for name in QUALITY)  # each image's brightness, contrast, sharpness
    calm = monitoring_flow()
    assert calm.verdict == "ok" and calm.retraining is None, calm.line()
    assert calm.unknown_rate < 0.15 and calm.figures["embedding_auc"] < 0.6, calm.line()
    # the figures, not the 3.9 MB report; the reference's answers, for the next runs
    assert last_monitoring_run(cfg) == ("ok", {"monitoring.json", "reference.parquet"})

    send(cfg, version, [unlike_training(100) for _ in range(6)])
    caught = monitoring_flow()
    assert caught.verdict == "drift" and caught.records == 1200, caught.line()
    assert last_monitoring_run(cfg) == ("drift", {"monitoring.json", "monitoring.html"})  # the reference read back
    assert caught.reference_from is not None
    assert caught.unknown_rate > 0.4 > calm.unknown_rate + 0.2  # the detector, not only the embeddings
    assert any("unknown" in reason for reason in caught.reasons)
    assert any("embeddings drifted" in reason for reason in caught.reasons)
    assert caught.retraining.startswith("completed: started by monitoring (")  # the reason travels with it
    assert "label examples of the new inputs" in caught.retraining  # same data: it says what to do instead
    report = Artifact.get("monitoring-report")
    assert report is not None and "drift" in report.data and (cfg.paths.reports / "monitoring.html").is_file()

    again = monitoring_flow()  # the drift lasts: no second retraining within the window
    assert again.verdict == "drift" and again.retraining.startswith("already started at ")


def test_the_command_prints_its_verdict_and_logs_it_once(champion):
    """`python -m flows.monitoring` as cron runs it: the verdict on stdout, and in the log once, from
    the flow's run logger (the stages' own logger is not shown as well)."""
    cfg, _ = champion
    params = cfg.root / "params.yaml"
    before = params.read_text()
    settings = yaml.safe_load(before)
    settings["monitoring"]["min_records"] = 10**6  # no verdict: nothing retrains, whatever the window holds
    params.write_text(yaml.safe_dump(settings))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "flows.monitoring"], cwd=cfg.root, capture_output=True, text=True, timeout=300,
            env={**os.environ, "PREFECT_API_URL": get_current_settings().api.url},
        )  # fmt: skip
    finally:
        params.write_text(before)
    assert done.returncode == 0, done.stderr[-3000:]
    verdict = done.stdout.strip().splitlines()[-1]
    assert verdict.startswith("monitoring ") and "no verdict" in verdict
    assert done.stderr.count(verdict) == 1, done.stderr[-3000:]


def test_a_window_with_too_few_answers_gives_no_verdict(champion):
    verdict = monitor.run(load_config(overrides={"monitoring.min_records": 10**6}))
    assert verdict.verdict == "no verdict" and "fewer than monitoring.min_records" in verdict.line()


def test_the_reference_is_answered_once_per_champion_and_images_and_read_back_alike(
    champion, tmp_path, monkeypatch, caplog
):
    """The first judged window computes the reference's answers and logs them to its MLflow run; the
    next reads them back (no model loaded) to the same figures; other reference images, or a damaged
    file, are answered anew."""
    cfg, version = champion
    name = cfg.register.model_name
    monkeypatch.setattr(monitor, "REFERENCE_IMAGES", 300)  # a reference no other test's run has answered
    images = monitor.reference_images(cfg)
    connect(cfg)
    window = monitor.reference_records(images[::2] // 2, f"models:/{name}/{version}")  # darker: figures that move
    prediction_log.write(tmp_path, window.to_dict("records"), "serve", name, version)
    overrides = {"monitoring.log": str(tmp_path), "monitoring.min_records": 10}
    first = monitor.run(load_config(overrides=overrides))
    assert first.reference_from is None and first.verdict == "drift", first.line()
    assert "reference.parquet" in last_monitoring_run(cfg)[1]

    def answered(*args):
        raise AssertionError("the reference was answered again")

    monkeypatch.setattr(monitor, "reference_records", answered)
    again = monitor.run(load_config(overrides=overrides))
    assert again.reference_from is not None and "reference.parquet" not in last_monitoring_run(cfg)[1]
    assert (again.figures, again.reasons, again.unknown_rate) == (first.figures, first.reasons, first.unknown_rate)

    redrawn = load_config(overrides=overrides | {"data.seed": cfg.data.seed + 1})  # as many images, other ones
    assert monitor.reference_images(redrawn).shape == images.shape
    with pytest.raises(AssertionError, match="answered again"):
        monitor.run(redrawn)

    stored = Path(urlparse(MlflowClient().get_run(again.reference_from).info.artifact_uri).path)
    (stored / "reference.parquet").write_bytes(b"not parquet")
    with pytest.raises(AssertionError, match="answered again"):
        monitor.run(load_config(overrides=overrides))
    assert f"reference answers of monitoring run {again.reference_from} unreadable" in caplog.text


def test_a_champion_from_before_the_detector_gives_no_verdict_rather_than_a_false_ok(champion, tmp_path):
    cfg, version = champion
    old = [{"class": "bars", "probability": 0.9, "novelty": None, "unknown": None, "embedding": None,
            "input_sha256": f"{i:016x}", "image": None} for i in range(20)]  # fmt: skip
    prediction_log.write(tmp_path, old, "serve", cfg.register.model_name, version)
    overrides = {"monitoring.log": str(tmp_path), "monitoring.min_records": 10}
    verdict = monitor.run(load_config(overrides=overrides))
    assert verdict.verdict == "no verdict" and "logs neither 'unknown' nor embeddings" in verdict.line()
