"""Cluttered Fashion-MNIST: deterministic canvases with known boxes, through validation and preprocessing."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import evaluate, preprocess, train, validate
from pipeline.core.config import load_config
from pipeline.data import cluttered
from pipeline.data.manifest import Scan, box_array, box_cell, manifest_frame
from pipeline.data.splits import load_split
from tests.synthetic import write_small_fashion_mnist


@pytest.fixture(scope="module")
def items():
    rng = np.random.default_rng(0)
    return rng.integers(1, 256, (20, 28, 28)).astype(np.uint8) * (rng.random((20, 28, 28)) < 0.5)


def test_a_canvas_is_the_same_for_the_same_seed_and_moves_with_another(items):
    first, box = cluttered.generate(items, 3, "train", 60, 4, seed=1)
    again, same_box = cluttered.generate(items, 3, "train", 60, 4, seed=1)
    other, other_box = cluttered.generate(items, 3, "train", 60, 4, seed=2)
    assert np.array_equal(first, again) and box == same_box
    assert other_box != box


def test_the_item_lies_whole_inside_its_box(items):
    canvas, (x_min, y_min, x_max, y_max) = cluttered.generate(items, 5, "test", 60, 8, seed=0)
    assert 0 <= x_min < x_max <= 60 and 0 <= y_min < y_max <= 60
    assert (x_max - x_min) * (y_max - y_min) <= 60 * 60 / 4  # the item covers at most a quarter
    item = items[5]
    rows, cols = np.nonzero(item)
    inside = canvas[y_min:y_max, x_min:x_max]
    placed = item[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    assert (inside >= placed).all() and placed.any()


def test_clutter_comes_from_the_same_split_only():
    test_items = np.full((5, 28, 28), 7, dtype=np.uint8)  # train items would be another value
    canvas, _ = cluttered.generate(test_items, 0, "test", 64, 16, seed=0)
    assert set(np.unique(canvas)) <= {0, 7}
    with_clutter, _ = cluttered.generate(np.eye(28, dtype=np.uint8)[None].repeat(5, 0) * 9, 0, "test", 64, 16, 0)
    assert (with_clutter == 9).sum() > 28  # fragments of the other items were laid, besides the item's own diagonal


def test_a_box_outside_its_image_fails_validation_naming_the_file(project):
    rows = [{
        "path": f"train/a/{i}.png", "split": "train", "label": "ab"[i % 2], "bytes": 1, "sha256": str(i),
        "format": "PNG", "width": 16, "height": 16, "mode": "L", "frames": 1, "exif_orientation": 1,
        "decodable": True, "error": None, "boxes": box_cell(np.array([[2, 2, 20 if i == 0 else 9, 9], [1, 1, 5, 5]])),
    } for i in range(40)]  # fmt: skip
    scan = Scan(manifest_frame(rows), [("train", "a"), ("train", "b")])
    outcome = validate.validate_scan(project, scan)
    failed = [r for r in outcome.results if not r.success]
    assert [r.name for r in failed] == [
        "object boxes inside their image (0 ≤ x_min < x_max ≤ width, 0 ≤ y_min < y_max ≤ height)"
    ]
    assert failed[0].offending == ["train/a/0.png"]


def test_the_cluttered_source_runs_through_the_stages_and_measures_localisation(project, tmp_path):
    source = write_small_fashion_mnist(tmp_path / "fashion", train=300, test=100)
    params = yaml.safe_load((project.root / "params.yaml").read_text())
    params["data"].update(source="cluttered-fashion-mnist", path=str(source), image_size=30, canvas=60)
    params["validate"]["max_imbalance"] = 100.0
    (project.root / "params.yaml").write_text(yaml.safe_dump(params))
    cfg = load_config()
    validate.run(cfg)
    manifest = pd.read_csv(cfg.paths.manifest)
    boxes = {path: box_array(cell) for path, cell in zip(manifest["path"], manifest["boxes"], strict=True)}
    assert len(boxes) == 400 and all(b.shape == (1, 4) and b.min() >= 0 and b.max() <= 60 for b in boxes.values())
    preprocess.run(cfg)
    test = load_split(cfg.paths.processed, "test")
    expected = np.stack([boxes[path] for path in test.paths]) / 2  # 60 px → 30 px
    np.testing.assert_allclose(test.boxes.numpy(), expected)
    train.run(cfg)
    evaluate.run(cfg)
    localisation = json.loads((cfg.paths.metrics / "eval.json").read_text())["attention"]["localisation"]
    assert localisation["boxed_images"] == 100
    assert 0 <= localisation["pointing_game"] <= 1 and 0 < localisation["box_area_share"] < 0.25
