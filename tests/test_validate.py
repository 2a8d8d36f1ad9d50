import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skimage.data
from PIL import Image

from pipeline import validate
from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError
from tests.servers import offline_page
from tests.synthetic import write_dataset


def tree_checksum(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def run_validation(cfg):
    return validate.run(cfg)


def failure(cfg) -> str:
    with pytest.raises(PipelineError) as error:
        run_validation(cfg)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_valid_dataset_passes_and_writes_manifest_and_reports(project, dataset):
    outcome = run_validation(project)
    assert outcome.success
    manifest = pd.read_csv(project.paths.manifest)
    assert len(manifest) == 3 * 50
    assert set(manifest.columns) >= {"path", "label", "split", "bytes", "sha256", "format", "width", "height", "mode"}
    report = json.loads((project.paths.reports / "validation.json").read_text())
    assert report["success"] and all(rule["success"] for rule in report["rules"])
    assert (project.paths.reports / "data_docs" / "index.html").is_file()


def test_corrupt_file_is_named(project, dataset):
    (dataset / "train" / "bars" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    message = failure(project)
    assert "every file decodes" in message and "train/bars/broken.png" in message


def test_truncated_png_is_named(project, dataset):
    whole = (dataset / "train" / "columns" / "000.png").read_bytes()
    (dataset / "train" / "columns" / "cut.png").write_bytes(whole[: len(whole) // 2])
    assert "train/columns/cut.png" in failure(project)


def camera_photo(width: int = 5472, height: int = 3648) -> Image.Image:
    """A drone camera's 20-Mpx photo (a DJI Phantom 4's 5472×3648): larger than the 4096 px a side
    and 16.7 Mpx that the defaults accepted before 2026-12-06."""
    return Image.fromarray(skimage.data.astronaut()).resize((width, height))


def test_a_camera_size_photo_passes_with_the_default_limits(project, dataset):
    camera_photo().save(dataset / "train" / "bars" / "drone.jpg", quality=85)
    assert run_validation(project).success
    row = pd.read_csv(project.paths.manifest).set_index("path").loc["train/bars/drone.jpg"]
    assert row["decodable"] and (row["width"], row["height"]) == (5472, 3648)  # its own size, from the header


def test_a_cut_camera_photo_is_named_though_decoded_at_an_eighth(project, dataset):
    buffer = io.BytesIO()
    camera_photo(2400, 1600).save(buffer, format="JPEG", quality=85)
    (dataset / "train" / "bars" / "cut.jpg").write_bytes(buffer.getvalue()[: buffer.tell() // 2])
    assert project.data.image_size * 8 <= 1600  # validation decodes it at 1/8 scale, as preprocess will
    assert "every file decodes" in (message := failure(project)) and "train/bars/cut.jpg" in message


def test_a_format_left_out_is_named_with_the_key_that_lets_it_in(project, dataset):
    Image.new("L", (32, 32), 90).save(dataset / "train" / "bars" / "still.gif")  # GIF: not in the defaults
    message = failure(project)
    assert "train/bars/still.gif" in message and "validate.formats; GIF may be added" in message


def test_a_16_bit_tiff_scan_passes_with_the_defaults(project, dataset):
    scan = Image.fromarray(np.full((32, 32), 3000, dtype=np.uint16))  # as microscopes and line cameras write
    scan.save(dataset / "train" / "bars" / "scan.tif")
    assert run_validation(project).success
    manifest = pd.read_csv(project.paths.manifest).set_index("path")
    assert manifest.loc["train/bars/scan.tif", "format"] == "TIFF"


def test_zero_byte_file_is_named(project, dataset):
    (dataset / "test" / "squares" / "empty.png").touch()
    assert "test/squares/empty.png" in failure(project)


def test_non_image_file_is_named(project, dataset):
    (dataset / "train" / "bars" / "notes.txt").write_text("not an image")
    message = failure(project)
    assert "train/bars/notes.txt (UnidentifiedImageError: cannot identify image file)" in message
    assert "BytesIO" not in message  # PIL names its in-memory buffer: nothing a user can act on


def test_empty_class_folder_is_named(project, dataset):
    (dataset / "train" / "circles").mkdir()
    message = failure(project)
    assert "images per class" in message and "train/circles" in message


def test_same_image_under_two_labels_is_named(project, dataset):
    shutil.copy(dataset / "train" / "bars" / "001.png", dataset / "train" / "squares" / "copy.png")
    message = failure(project)
    assert "under two labels" in message
    assert "train/bars/001.png" in message and "train/squares/copy.png" in message


def test_same_image_in_train_and_test_is_named(project, dataset):
    shutil.copy(dataset / "train" / "bars" / "002.png", dataset / "test" / "bars" / "leak.png")
    message = failure(project)
    assert "in two splits" in message and "test/bars/leak.png" in message


def test_classes_outside_data_classes_are_left_out_and_named(project, dataset):
    """`data.classes` picks the classes to train on: the other class folders are left out, named in
    the report, and their files stay as they were."""
    before = tree_checksum(dataset)
    (dataset / "train" / "columns" / "broken.png").write_bytes(b"not an image")  # never read: left out
    cfg = load_config(overrides={"data.classes": ["squares", "bars"]})
    outcome = run_validation(cfg)
    assert outcome.success and set(outcome.manifest["label"]) == {"bars", "squares"}
    report = json.loads((cfg.paths.reports / "validation.json").read_text())
    assert report["left_out"] == ["test/columns", "train/columns"]
    assert report["accepted"] == len(outcome.manifest) == 2 * (40 + 10)
    (dataset / "train" / "columns" / "broken.png").unlink()
    assert tree_checksum(dataset) == before


def test_a_class_named_in_data_classes_without_a_folder_is_named(project, dataset):
    cfg = load_config(overrides={"data.classes": ["bars", "columns", "squars"]})
    message = failure(cfg)
    assert message.startswith("data.classes: no class folder 'squars'"), message
    assert "columns, squares" in message and "params.yaml" in message


def test_image_too_small_is_named(project, dataset):
    Image.new("L", (4, 4)).save(dataset / "train" / "bars" / "tiny.png")
    message = failure(project)
    assert "train/bars/tiny.png" in message and "fix or remove those files, or set validate.on_error: skip" in message


def test_class_imbalance_is_named(dataset, project):
    cfg = load_config(overrides={"validate.max_imbalance": 1.5})
    for path in sorted((dataset / "train" / "bars").iterdir())[:20]:
        path.unlink()
    message = failure(cfg)
    assert "largest class" in message and "train/bars" in message
    # a class rule's remedy: leaving files out (on_error: skip) cannot meet it
    assert "change the param the rule names" in message and "on_error" not in message


def test_an_inspection_lines_imbalance_passes_by_default(project, tmp_path):
    """3 % defective cells (1 : 33 in a split) are an inspection line's everyday data, not an error."""
    images = write_dataset(tmp_path / "line", {"train": 200}, classes=("ok", "defective"))
    for path in sorted((images / "train" / "defective").iterdir())[6:]:
        path.unlink()
    assert run_validation(load_config(overrides={"data.path": str(images)})).success


def test_skip_mode_leaves_bad_files_out_and_goes_on(project, dataset):
    (dataset / "train" / "bars" / "broken.png").write_bytes(b"junk")
    cfg = load_config(overrides={"validate.on_error": "skip"})
    outcome = run_validation(cfg)
    assert outcome.success
    assert "train/bars/broken.png" in outcome.skipped
    manifest = pd.read_csv(cfg.paths.manifest)
    assert "train/bars/broken.png" not in set(manifest["path"]) and len(manifest) == 150
    report = json.loads((cfg.paths.reports / "validation.json").read_text())
    assert report["skipped"][0]["path"] == "train/bars/broken.png"


def test_users_data_is_never_modified(project, dataset):
    (dataset / "train" / "bars" / "broken.png").write_bytes(b"junk")
    (dataset / "train" / "bars" / ".DS_Store").write_bytes(b"finder")
    before = tree_checksum(dataset)
    failure(project)
    run_validation(load_config(overrides={"validate.on_error": "skip"}))
    assert tree_checksum(dataset) == before


def test_data_docs_list_the_runs_and_are_styled_with_the_network_off(project):
    """GX's pages load their scripts and styles from CDNs; the stage's copies must stand in for all
    of them: the index's table of validation runs is filled by bootstrap-table, a result page is
    laid out by Bootstrap, and the browser asks the web for nothing."""
    run_validation(project)
    index = project.paths.reports / "data_docs" / "index.html"
    failed = []
    with offline_page("file:") as (page, web):
        page.on("requestfailed", lambda request: failed.append(request.url))
        page.goto(index.as_uri(), wait_until="load")
        runs = page.locator(".ge-index-page-validation-results-table tbody tr[data-href]")
        listed = runs.all_inner_texts()
        if listed:
            runs.first.click()  # a row opens its result page
            page.wait_for_url("**/validations/**", wait_until="load")
        style = "e => [getComputedStyle(e).display, getComputedStyle(e).position]"
        navbar = page.locator("nav.navbar").first.evaluate(style)
        result_rows = page.locator("table tbody tr").count()
    assert len(listed) == 2 and sorted("files" in run for run in listed) == [False, True], listed  # files, classes
    assert navbar == ["flex", "sticky"]  # Bootstrap's .navbar and .sticky-top (unstyled: block, static)
    assert result_rows > 0
    assert web == [] and failed == []
