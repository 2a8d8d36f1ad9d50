"""A user's boxes.csv: checked row by row by validation, scaled with the images, scored by evaluate."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import evaluate, preprocess, train, validate
from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError
from pipeline.data import image_folder
from pipeline.data.manifest import box_cell, manifest_frame
from pipeline.data.splits import load_split
from pipeline.model.attention_checks import faithfulness

BOX_RULE = "object boxes inside their image (0 ≤ x_min < x_max ≤ width, 0 ≤ y_min < y_max ≤ height)"


def write_boxes(root, lines: list[str]) -> None:
    (root / "boxes.csv").write_text("\n".join(["path,x_min,y_min,x_max,y_max", *lines]) + "\n")


def test_every_kind_of_bad_row_is_named_and_the_file_is_left_as_it_was(project, dataset):
    write_boxes(dataset, [
        "train/bars/000.png,1,2,9,10",
        "train/bars/999.png,1,2,9,10",  # no such image
        "train/columns/001.png,0,0,4,4",
        "train/columns/001.png,1,1,5,5",  # a second object in the same image: fine
        "train/squares/002.png,1,two,9,10",  # not a number
        "test/squares/003.png,2,2,17,8",  # x_max beyond the 16 px image
        "test/bars/004.png,9,2,3,8",  # x_min > x_max
    ])  # fmt: skip
    before = hashlib.sha256((dataset / "boxes.csv").read_bytes()).hexdigest()
    outcome = validate.validate_scan(project, image_folder.scan(dataset))
    failed = {r.name: sorted(r.offending) for r in outcome.results if not r.success}
    assert failed == {
        "boxes.csv: each row names an image of the dataset": ["line 3: train/bars/999.png"],
        "boxes.csv: four numbers per row (x_min, y_min, x_max, y_max)": ["line 6: train/squares/002.png"],
        BOX_RULE: ["test/bars/004.png", "test/squares/003.png"],
    }
    assert hashlib.sha256((dataset / "boxes.csv").read_bytes()).hexdigest() == before
    with pytest.raises(PipelineError, match="boxes.csv: each row names an image"):
        validate.run(project)


def test_boxes_of_a_class_left_out_by_data_classes_are_not_checked(project, dataset):
    write_boxes(dataset, ["train/bars/000.png,1,2,9,9", "train/columns/001.png,0,0,4,4", "train/columns/9.png,1,1,5,5"])
    scan = image_folder.scan(dataset, classes=["bars", "squares"])
    assert scan.left_out == ["test/columns", "train/columns"]
    assert scan.box_rows["row"].tolist() == ["line 2: train/bars/000.png"]
    assert validate.validate_scan(project, scan).success
    assert not validate.validate_scan(project, image_folder.scan(dataset)).success  # every class: 9.png is named


def test_a_box_is_checked_against_the_image_as_shown_after_its_exif_rotation(project):
    row = {
        "path": "a.jpg", "split": "train", "label": "a", "bytes": 1, "sha256": "0", "format": "JPEG", "width": 40,
        "height": 20, "mode": "L", "frames": 1, "decodable": True, "error": None,
        "boxes": box_cell(np.array([[0, 0, 20, 40], [0, 0, 4, 4]])),
    }  # fmt: skip
    upright, turned = manifest_frame([{**row, "exif_orientation": 1}]), manifest_frame([{**row, "exif_orientation": 6}])
    assert not validate.box_fits(upright).item() and validate.box_fits(turned).item()
    scaled = preprocess.scaled_boxes(turned, 10)
    assert scaled.tolist() == [[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 2.0, 1.0]]]  # 20×40 as shown → 10×10


@pytest.mark.parametrize(
    ("content", "reason"),
    [("file,x0,y0\na.png,1,2\n", "no column path, x_min, y_min, x_max, y_max"), ("", "unreadable CSV")],
)
def test_a_boxes_file_without_the_header_stops_the_scan_naming_it(dataset, content, reason):
    (dataset / "boxes.csv").write_text(content)
    with pytest.raises(PipelineError, match=reason) as error:
        image_folder.scan(dataset)
    assert str(dataset / "boxes.csv") in str(error.value) and "\n" not in str(error.value)


def test_boxes_of_some_images_are_scaled_with_them_and_scored_in_evaluate(project, dataset):
    test_images = sorted(p.relative_to(dataset).as_posix() for p in (dataset / "test").rglob("*.png"))
    annotated = test_images[::2]
    two = annotated[0]  # two objects: the left half and a square at the right
    write_boxes(dataset, [f"./{path},0,0,8,16" for path in annotated] + [f"{two},12,0,16,4"])  # some with "./"
    params = yaml.safe_load((project.root / "params.yaml").read_text())
    params["data"]["image_size"] = 8  # 16 px images → 8 px: boxes halve
    (project.root / "params.yaml").write_text(yaml.safe_dump(params))
    cfg = load_config()
    validate.run(cfg)
    manifest = pd.read_csv(cfg.paths.manifest)
    assert manifest["boxes"].notna().sum() == len(annotated)
    preprocess.run(cfg)
    test = load_split(cfg.paths.processed, "test")
    nan = [np.nan] * 4
    expected = [[[0, 0, 4, 8], [6, 0, 8, 2]] if path == two else [[0, 0, 4, 8], nan] if path in annotated
                else [nan, nan] for path in test.paths]  # fmt: skip
    np.testing.assert_array_equal(test.boxes.numpy(), np.array(expected, dtype=np.float32))
    train.run(cfg)
    evaluate.run(cfg)
    checked = json.loads((cfg.paths.metrics / "eval.json").read_text())["attention"]
    assert checked["faithfulness"] == faithfulness(checked["deletion_auc"])  # the verdict, in words
    by_class = checked["by_predicted_class"]
    assert by_class and all(c["faithfulness"] == faithfulness(c["deletion_auc"]) for c in by_class.values())
    sampled = checked["faithfulness_images"] + checked["class_top_up_images"]
    assert sampled == len(test.labels)  # the whole split: its answers, per class, are predictions.csv's
    answered = pd.read_csv(cfg.paths.metrics / "predictions.csv")["predicted"].value_counts()
    followed = answered[answered >= evaluate.MIN_CLASS_IMAGES]
    assert {name: c["images"] for name, c in by_class.items()} == followed.to_dict()
    localisation = checked["localisation"]
    assert localisation["boxed_images"] == localisation["gradcam_images"] == len(annotated)
    assert localisation["box_area_share"] == pytest.approx(0.5 + (4 / 64) / len(annotated), abs=0.02)
    for key in ("pointing_game", "pointing_game_centre_baseline", "box_attention_mass", "gradcam_pointing_game"):
        assert 0 <= localisation[key] <= 1
