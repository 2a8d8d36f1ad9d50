"""16-bit images from cameras that use fewer bits (12-bit X-ray and electroluminescence cameras store
0..4095): read at the depth the dataset uses, the same way in training, export and serving."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pipeline import export, preprocess, train, validate
from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError
from pipeline.data.images import bright_sample, load_image, sample_bits
from pipeline.data.splits import load_split
from pipeline.model import onnx_file
from pipeline.model.champion import task_difference
from pipeline.model.model_file import ModelInfo, load_model
from pipeline.model.pyfunc import AttentionClassifier
from tests.synthetic import prepare, small_params, write_dataset

SHIFT = 4  # 8-bit pictures × 16: a 12-bit camera's range


def twelve_bit(image_8bit: Path, target: Path) -> None:
    """The 8-bit picture as a 12-bit camera would store it: 16-bit PNG, samples 0..4095."""
    pixels = np.asarray(Image.open(image_8bit)).astype(np.uint16) << SHIFT
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(target)


def test_a_12_bit_image_fills_the_8_bit_range_at_its_own_depth(tmp_path):
    ramp = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)  # every 12-bit level
    path = tmp_path / "ramp.png"
    Image.fromarray(ramp).save(path)
    own, full = load_image(path, 64, 1, bits=12), load_image(path, 64, 1, bits=16)
    assert own.max() == 255 and len(np.unique(own)) == 256
    assert full.max() == 16 and len(np.unique(full)) == 17  # read as 16-bit: 17 grey levels, nearly black


@pytest.mark.parametrize(
    ("brightest", "bits"),
    [(None, 16), (200, 8), (255, 8), (256, 10), (1800, 12), (4095, 12), (4096, 14), (65535, 16), (70000, 17)],
)
def test_the_depth_is_the_cameras_that_holds_the_brightest_sample(brightest, bits):
    assert sample_bits(brightest) == bits


def test_a_few_hot_pixels_do_not_set_an_images_bright_level():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4096, (100, 100), dtype=np.uint16)  # 12-bit content
    pixels[0, :8] = 65535  # 8 hot pixels: 0.08 % of the image
    assert bright_sample(Image.fromarray(pixels)) <= 4095
    pixels[:2] = 65535  # 2 % of the image that bright: content, not hot pixels
    assert bright_sample(Image.fromarray(pixels)) == 65535
    small = np.zeros((20, 20), dtype=np.uint16)  # under 1,000 pixels: every sample counts
    small[3, 3] = 4000
    assert bright_sample(Image.fromarray(small)) == 4000
    assert bright_sample(Image.fromarray(small.astype(np.uint8))) is None  # 8-bit: no depth to find


def test_a_stuck_pixel_in_every_image_does_not_darken_a_12_bit_set(tmp_path, monkeypatch):
    """A sensor's stuck pixel (65,535 in every image) clips to white; the set is still read at 12 bits,
    not as 16-bit (which would show each picture at a sixteenth of its brightness)."""
    eight = write_dataset(tmp_path / "eight", {"train": 10, "test": 5}, size=48)
    images = tmp_path / "images"
    for path in eight.rglob("*.png"):
        pixels = np.asarray(Image.open(path)).astype(np.uint16) << SHIFT
        pixels[5, 7] = 65535
        (images / path.relative_to(eight)).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(images / path.relative_to(eight))
    cfg = prepare(images, tmp_path / "project", monkeypatch)
    assert json.loads((cfg.paths.processed / "meta.json").read_text())["bit_depth"] == 12


def test_a_manifest_from_an_older_validate_is_refused_before_preprocessing(camera_project):
    cfg, _, _ = camera_project
    manifest = cfg.paths.manifest.read_text()
    try:
        cfg.paths.manifest.write_text(manifest.replace("bright_sample", "max_sample", 1))
        with pytest.raises(PipelineError, match=r"manifest.csv: written by an older validate \(no bright_sample\); "
                           r"run it again \('dvc repro validate'\)"):  # fmt: skip
            preprocess.run(cfg)
    finally:
        cfg.paths.manifest.write_text(manifest)


def test_another_bit_depth_is_another_input_for_the_registry():
    fields = {"model_config": {}, "classes": ["a", "b"], "image_size": 28, "channels": 1, "mean": [0.5], "std": [0.5]}
    assert "another bit depth" in task_difference(ModelInfo(**fields, bit_depth=12), ModelInfo(**fields))
    assert task_difference(ModelInfo(**fields, bit_depth=12), ModelInfo(**fields, bit_depth=12)) is None


@pytest.fixture(scope="module")
def camera_project(tmp_path_factory):
    """A project on a folder of 12-bit images (the generated classes), validated and preprocessed."""
    root = tmp_path_factory.mktemp("camera")
    eight = write_dataset(root / "eight", {"train": 40, "test": 10})
    images = root / "images"
    for path in eight.rglob("*.png"):
        twelve_bit(path, images / path.relative_to(eight))
    project = root / "project"
    project.mkdir()
    (project / "params.yaml").write_text(yaml.safe_dump(small_params(str(images))))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIPELINE_ROOT", str(project))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        cfg = load_config()
        validate.run(cfg)
        yield cfg, eight, images


def test_the_bit_depth_follows_the_data_unless_params_fix_it(camera_project):
    cfg, eight, _ = camera_project
    report = json.loads((cfg.paths.reports / "validation.json").read_text())
    assert report["normalised"] == {"mode I;16 to 8-bit L/RGB (samples up to 3,680, hot pixels aside)": 150}  # 230 << 4
    meta = preprocess.run(cfg)
    test = load_split(cfg.paths.processed, "test")
    originals = np.stack([np.asarray(Image.open(eight / path))[None] for path in test.paths])
    assert meta["bit_depth"] == 12
    assert np.abs(test.images.numpy().astype(int) - originals).max() <= 1  # the 8-bit pictures, back
    fixed = preprocess.run(load_config(overrides={"data.bit_depth": 16}))
    assert fixed["bit_depth"] == 16 and load_split(cfg.paths.processed, "test").images.max() <= 230 * 16 // 257 + 1


def test_export_and_every_way_of_serving_read_a_file_as_training_did(camera_project, tmp_path):
    cfg, _, images = camera_project
    preprocess.run(cfg)
    train.run(cfg)
    export.run(cfg)
    model, info = load_model(cfg.paths.model_file)
    test = load_split(cfg.paths.processed, "test")
    with torch.no_grad():
        expected = model(test.images).logits.softmax(1).numpy()
    files = [images / path for path in test.paths]
    assert info.bit_depth == 12
    assert onnx_file.image_format(onnx_file.session(cfg.paths.onnx_file))[3] == 12

    served = AttentionClassifier()
    served.model, served.info = model, info
    answer = served.predict(None, [file.read_bytes() for file in files])
    np.testing.assert_allclose(answer["probabilities"], expected, atol=1e-4)

    for reference in (cfg.paths.model_file, cfg.paths.onnx_file):
        out = tmp_path / f"{reference.suffix}.csv"
        done = subprocess.run(
            [sys.executable, "-m", "pipeline.predict", str(images / "test"), "--out", str(out), "--model",
             str(reference), "--precision", "fp32"][: None if reference.suffix == ".pt" else -2],
            cwd=cfg.root, capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        with out.open() as handle:
            answered = {row["path"]: float(row["probability"]) for row in csv.DictReader(handle)}
        given = [answered[str(file)] for file in files]
        of_answer = expected[np.arange(len(expected)), info.rule.classes(expected, info.classes)]  # weighed answer
        np.testing.assert_allclose(given, of_answer, atol=1e-4, err_msg=reference.suffix)
