"""Every kind of bad or unusual image a user's folder can hold, planted one at a time: each is either
a validation failure naming the file and the rule, or normalised and counted in the report."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import preprocess, validate
from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError
from pipeline.data.images import load_image
from tests.synthetic import write_dataset


def tree_checksum(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def png_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def jpeg_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def a_picture(mode: str = "L", size: int = 16) -> Image.Image:
    """A picture with structure (not a flat colour), in `mode`."""
    rng = np.random.default_rng(len(mode) + size)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), "RGB").convert(mode)


def animated_gif() -> bytes:
    frames = [a_picture("P"), a_picture("P", 16).rotate(90)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def bomb() -> bytes:
    """A small file declaring 3000x3000 pixels (over the 1,000,000 limit the tests set)."""
    return png_bytes(Image.new("L", (3000, 3000)), optimize=True)


# name -> (bytes of the planted file, its file name, the rule expected to name it)
REFUSED: dict[str, tuple[Callable[[], bytes], str, str]] = {
    "zero-byte file": (lambda: b"", "empty.png", "every file decodes"),
    "text file named .png": (lambda: b"this is not an image\n", "notes.png", "every file decodes"),
    "truncated PNG": (lambda: png_bytes(a_picture())[:-40], "cut.png", "every file decodes"),
    "truncated JPEG": (lambda: jpeg_bytes(a_picture("RGB", 64))[:400], "cut.jpg", "every file decodes"),
    "stray non-image file": (lambda: b"%PDF-1.4\n", "manual.pdf", "every file decodes"),
    "1x1 image": (lambda: png_bytes(Image.new("L", (1, 1))), "dot.png", "width within"),
    "decompression bomb": (bomb, "bomb.png", "every file decodes"),
    "animated GIF": (animated_gif, "moving.gif", "a single frame"),
}


@pytest.fixture
def cfg(project):
    return load_config(overrides={"validate.max_pixels": 1_000_000, "validate.formats": ["PNG", "JPEG", "GIF"]})


@pytest.mark.parametrize("kind", list(REFUSED))
def test_bad_file_is_refused_naming_file_and_rule(cfg, dataset, kind):
    make, name, rule = REFUSED[kind]
    (dataset / "train" / "bars" / name).write_bytes(make())
    before = tree_checksum(dataset)
    with pytest.raises(PipelineError) as error:
        validate.run(cfg)
    message = str(error.value)
    assert "\n" not in message and rule in message and f"train/bars/{name}" in message
    assert json.loads((cfg.paths.reports / "validation.json").read_text())["accepted"] == 0
    assert tree_checksum(dataset) == before
    assert not cfg.paths.manifest.exists()


def test_decompression_bomb_is_refused_from_its_header(cfg, dataset):
    (dataset / "train" / "bars" / "bomb.png").write_bytes(bomb())
    scan = validate.sources.scan(cfg)
    (row,) = scan.files[scan.files["path"] == "train/bars/bomb.png"].to_dict("records")
    assert not row["decodable"] and "3000x3000 = 9,000,000 pixels" in row["error"]
    assert "validate.max_pixels" in row["error"]


def rgba_with_transparent_corner() -> bytes:
    image = a_picture("RGBA")
    image.putpixel((0, 0), (0, 0, 0, 0))
    return png_bytes(image)


def exif_rotated_jpeg() -> bytes:
    image = Image.new("L", (16, 16), 0)
    image.paste(255, (0, 0, 4, 4))  # a white block top-left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90° clockwise
    return jpeg_bytes(image, exif=exif, quality=95)


# name -> (bytes, file name, the normalisation the report counts)
NORMALISED: dict[str, tuple[Callable[[], bytes], str, str]] = {
    "16-bit grayscale": (lambda: png_bytes(Image.fromarray(np.full((16, 16), 40000, np.uint16))), "deep.png",
                         "mode I;16"),
    "palette": (lambda: png_bytes(a_picture("P")), "palette.png", "mode P"),
    "RGBA": (rgba_with_transparent_corner, "alpha.png", "mode RGBA"),
    "CMYK JPEG": (lambda: jpeg_bytes(a_picture("CMYK")), "print.jpg", "mode CMYK"),
    "EXIF-rotated JPEG": (exif_rotated_jpeg, "rotated.jpg", "EXIF rotation"),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(NORMALISED))
def test_unusual_but_usable_image_is_normalised_and_counted(cfg, dataset, kind):
    make, name, counted = NORMALISED[kind]
    (dataset / "train" / "bars" / name).write_bytes(make())
    validate.run(cfg)
    report = json.loads((cfg.paths.reports / "validation.json").read_text())
    assert any(key.startswith(counted) and n == 1 for key, n in report["normalised"].items()), report["normalised"]
    meta = preprocess.run(cfg)
    assert meta["counts"]["train"] + meta["counts"]["val"] == 121


def test_16_bit_samples_are_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    path.write_bytes(NORMALISED["16-bit grayscale"][0]())
    assert load_image(path, 16, 1).max() == round(40000 / 257)


def test_transparent_pixels_become_white(tmp_path):
    path = tmp_path / "alpha.png"
    path.write_bytes(rgba_with_transparent_corner())
    assert tuple(load_image(path, 16, 3)[:, 0, 0]) == (255, 255, 255)


def test_exif_rotation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    path.write_bytes(exif_rotated_jpeg())
    pixels = load_image(path, 16, 1)[0]
    assert pixels[:4, 12:].mean() > 200 and pixels[:4, :4].mean() < 50  # top-left block now top-right


def test_single_class_is_refused(project, tmp_path):
    root = tmp_path / "one"
    shutil.copytree(project.source_path() / "train" / "bars", root / "bars")
    cfg = load_config(overrides={"data.path": str(root)})
    one = r"at least 2 classes with images in each split: 1 class folder \(bars: 40 images\);"
    with pytest.raises(PipelineError, match=one):
        validate.run(cfg)  # named as the user's folder is: no train/ in it


def test_a_class_only_the_test_split_has_is_named_by_its_files_and_skipping_them_leaves_no_other_complaint(
    project, dataset, tmp_path
):  # fmt: skip
    write_dataset(tmp_path / "more", {"test": 10}, seed=5, classes=("stripes",))
    shutil.move(tmp_path / "more" / "test" / "stripes", dataset / "test" / "stripes")
    with pytest.raises(PipelineError) as error:
        validate.run(project)
    assert "label in the class set ['bars', 'columns', 'squares']: 10 files (test/stripes/000.png" in str(error.value)
    assert "images per class" not in str(error.value) and "largest class" not in str(error.value)
    outcome = validate.run(load_config(overrides={"validate.on_error": "skip"}))
    assert outcome.success and len(outcome.skipped) == 10


def test_names_with_spaces_and_non_ascii_go_through(project, dataset):
    folder = dataset / "train" / "Ünïcode class"
    folder.mkdir()
    for index, source in enumerate(sorted((dataset / "train" / "bars").iterdir())[:40]):
        shutil.move(source, folder / f"my shirt №{index} ü.png")
    shutil.rmtree(dataset / "train" / "bars")
    (dataset / "test" / "bars").rename(dataset / "test" / "Ünïcode class")
    validate.run(project)
    meta = preprocess.run(project)
    assert "Ünïcode class" in meta["classes"] and sum(meta["counts"].values()) == 150


def test_a_link_is_validated_as_the_file_it_points_to_and_the_users_files_are_untouched(project, dataset, tmp_path):
    elsewhere = tmp_path / "elsewhere.png"
    elsewhere.write_bytes(png_bytes(a_picture()))
    os.symlink(elsewhere, dataset / "train" / "bars" / "link.png")
    before = hashlib.sha256(elsewhere.read_bytes()).hexdigest()
    outcome = validate.run(project)
    assert "train/bars/link.png" in set(outcome.manifest["path"]) and not outcome.ignored
    assert hashlib.sha256(elsewhere.read_bytes()).hexdigest() == before
    (dataset / "train" / "bars" / "link.png").unlink()
    os.symlink(tmp_path / "gone.png", dataset / "train" / "bars" / "link.png")
    broken = r"every file decodes as an image: 1 file \(train/bars/link\.png \(FileNotFound"
    with pytest.raises(PipelineError, match=broken):
        validate.run(project)
