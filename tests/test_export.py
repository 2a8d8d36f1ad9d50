"""The export stage: ONNX with a dynamic batch that matches PyTorch in onnxruntime, or no file."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pipeline import evaluate, export, preprocess, train, validate
from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError
from pipeline.data.splits import TensorSplit, load_split
from pipeline.model import onnx_file
from pipeline.model.model_file import load_model


@pytest.fixture
def trained(project):
    validate.run(project)
    preprocess.run(project)
    train.run(project)
    return project


def test_onnx_export_matches_pytorch_for_any_batch_size(trained, caplog):
    caplog.set_level(logging.INFO, logger="pipeline")
    report = export.run(load_config(overrides={"export.quantize": True}))
    assert f"model.int8.onnx, test accuracy {100 * report['int8_accuracy']:.4f}%" in caplog.text  # said, not only filed
    model, _ = load_model(trained.paths.model_file)
    session = onnx_file.session(trained.paths.onnx_file)
    images = load_split(trained.paths.processed, "test").images
    for batch in (1, 7, len(images)):
        logits, attention, embedding, novelty = session.run(None, {"images": images[:batch].numpy()})
        with torch.no_grad():
            reference = model(images[:batch])
        np.testing.assert_allclose(logits, reference.logits.numpy(), atol=1e-4)
        np.testing.assert_allclose(embedding, reference.embedding.numpy(), atol=1e-4)
        np.testing.assert_allclose(novelty, reference.novelty.numpy(), atol=1e-5)
        np.testing.assert_allclose(attention, reference.attention.numpy(), atol=1e-5)
        np.testing.assert_allclose(attention.reshape(batch, -1).sum(1), 1, atol=1e-5)
    saved = json.loads((trained.paths.metrics / "export.json").read_text())
    assert saved == report and report["top1_agreement"] == 1.0 and report["test_images"] == len(images)
    assert report["max_abs_logit_difference"] < 1e-4 and trained.paths.quantized_onnx_file.is_file()
    assert report["max_abs_novelty_difference"] < 1e-5 and report["unknown_agreement"] == 1.0
    assert sorted(p.name for p in trained.paths.models.iterdir()) == ["model.int8.onnx", "model.onnx", "model.pt"]
    assert report["int8_accuracy_change"] == pytest.approx(report["int8_accuracy"] - report["onnx_accuracy"])


def test_an_export_below_the_agreement_floor_keeps_no_file(trained, monkeypatch):
    real = onnx_file.predict

    def flipped(session, images, batch_size):  # an export that changes predictions
        outputs = real(session, images, batch_size)
        return {**outputs, "logits": -outputs["logits"]}

    monkeypatch.setattr(onnx_file, "predict", flipped)
    with pytest.raises(PipelineError, match=r"model\.onnx: the ONNX model agrees with PyTorch on only"):
        export.run(trained)
    assert not trained.paths.onnx_file.exists() and not list(trained.paths.models.glob(".model.onnx*"))


def test_predict_runs_the_onnx_file_without_pytorch_and_agrees_with_it(trained, tmp_path):
    export.run(trained)
    images = sorted((trained.root.parent / "images" / "test").rglob("*.png"))[::5]
    by_torch = predict_cli(trained, images, "models/model.pt", "--precision", "fp32")
    by_onnx = predict_cli(trained, images, "models/model.onnx", "--heatmap", str(tmp_path))
    assert [line[:2] for line in by_onnx] == [line[:2] for line in by_torch] and len(by_onnx) == len(images)
    for onnx_line, torch_line in zip(by_onnx, by_torch, strict=True):
        assert float(onnx_line[2]) == pytest.approx(float(torch_line[2]), abs=1e-3)
        assert Path(onnx_line[3]).is_file()
    classify_only = (
        "import runpy, sys; sys.argv = ['predict', *sys.argv[1:]]\n"
        "try: runpy.run_module('pipeline.predict', run_name='__main__')\n"
        "finally: print(sorted({'torch', 'mlflow', 'pandas'} & sys.modules.keys()) or 'neither')"
    )
    for logged in (False, True):  # the prediction log needs pyarrow, which imports pandas where it is installed
        extra = [] if logged else ["--no-log"]
        done = subprocess.run([sys.executable, "-c", classify_only, str(images[0]), "--model", "models/model.onnx",
                               *extra], cwd=trained.root, capture_output=True, text=True)  # fmt: skip
        imported = done.stdout.strip().splitlines()[-1]
        assert done.returncode == 0 and imported == ("['pandas']" if logged else "neither"), done.stdout + done.stderr
    assert len(list((trained.root / "logs" / "predictions").rglob("*.parquet"))) >= 2  # these runs' answers
    device = tmp_path / "device"  # the ONNX file alone, away from any project (no params.yaml)
    device.mkdir()
    shutil.copy(trained.paths.onnx_file, device / "model.onnx")
    env = {key: value for key, value in os.environ.items() if key != "PIPELINE_ROOT"}
    done = subprocess.run([sys.executable, "-m", "pipeline.predict", *map(str, images), "--model", "model.onnx",
                           "--no-log"], cwd=device, env=env, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [line.split("\t")[:2] for line in done.stdout.splitlines()] == [line[:2] for line in by_onnx]


def predict_cli(cfg, images, model, *extra) -> list[list[str]]:
    args = [sys.executable, "-m", "pipeline.predict", *map(str, images), "--model", model, *extra]
    done = subprocess.run(args, cwd=cfg.root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return [line.split("\t") for line in done.stdout.splitlines()]


def test_a_missing_or_foreign_onnx_file_is_named(trained, tmp_path):
    image = next((trained.root.parent / "images" / "test").rglob("*.png"))
    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes(b"not onnx")
    for model, message in (("models/model.onnx", "no such ONNX file; run the export stage"),
                           (str(foreign), "not an ONNX export of this project")):  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "pipeline.predict", str(image), "--model", model],
                              cwd=trained.root, capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 1 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_the_parity_check_runs_on_a_fixed_sample_of_the_test_split():
    split = TensorSplit(torch.arange(100, dtype=torch.uint8).reshape(100, 1, 1, 1), torch.arange(100))
    sample = export.parity_sample(split, 10)
    assert len(sample.labels) == 10 and len(set(sample.labels.tolist())) == 10
    assert torch.equal(sample.images[:, 0, 0, 0].long(), sample.labels)  # images stay with their labels
    assert torch.equal(export.parity_sample(split, 10).labels, sample.labels)  # the same every run
    assert not torch.equal(sample.labels, torch.arange(10))  # spread over the split, not its start
    assert export.parity_sample(split, 0) is split and export.parity_sample(split, 500) is split


def test_evaluate_and_export_on_a_streamed_test_split_report_what_they_report_from_memory(project):
    validate.run(project)
    preprocess.run(project)
    memory = load_config(overrides={"train.loader": "memory"})
    train.run(memory)
    figures = {}
    for loader in ("memory", "stream"):
        cfg = load_config(overrides={"train.loader": loader})
        evaluated, exported = evaluate.run(cfg), export.run(cfg)
        figures[loader] = (
            {key: value for key, value in evaluated.items() if key not in ("run_id", "inference_images_per_second")},
            {key: exported[key] for key in ("test_images", "top1_agreement", "onnx_accuracy")},
        )
        rows = pd.read_csv(cfg.paths.metrics / "predictions.csv")
        figures[loader] += (rows.drop(columns=[c for c in rows.columns if "seconds" in c]).round(5),)
    assert figures["stream"][:2] == figures["memory"][:2]
    pd.testing.assert_frame_equal(figures["stream"][2], figures["memory"][2])


def test_a_model_with_several_heads_shows_each_heads_map_and_exports_their_mean(project):
    validate.run(project)
    preprocess.run(project)
    cfg = load_config(overrides={"model.attention_heads": 3})
    train.run(cfg)
    evaluate.run(cfg)
    width, height = Image.open(cfg.paths.plots / "attention_overlays.png").size
    assert width / height < 2  # a row per overlay image (the mean, heads 1..3), not the four side by side
    export.run(cfg)
    model, _ = load_model(cfg.paths.model_file)
    images = load_split(cfg.paths.processed, "test").images[:5]
    _, attention, _, _ = onnx_file.session(cfg.paths.onnx_file).run(None, {"images": images.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(attention, model.head_maps(images).mean(1).numpy(), atol=1e-5)
