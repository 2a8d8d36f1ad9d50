"""Attention overlays at the image's own resolution."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from bench.speed.memory_limit import cgroup_unavailable, memory_cgroup
from pipeline.core import figures
from pipeline.core.overlay import overlay
from pipeline.data.images import EXIF_ORIENTATION
from pipeline.predict import ImagePrediction, write_heatmap
from tests.synthetic import PROJECT

DRAW_A_CAMERA_PHOTO = """
import numpy as np
from PIL import Image
from pipeline.core.overlay import overlay
photo = Image.linear_gradient("L").resize((5472, 3648)).convert("RGB")  # a drone's 20 Mpx: 60 MB
print(overlay(photo, np.random.default_rng(0).random((32, 32)).astype(np.float32)).size)
"""


def redness(picture: Image.Image) -> np.ndarray:
    pixels = np.asarray(picture, dtype=np.float32)
    return pixels[..., 0] - pixels[..., 2]


def test_the_overlay_keeps_the_image_size_and_is_hottest_under_the_peak():
    image = Image.new("L", (60, 30), 128)
    attention = np.full((3, 6), 0.01, dtype=np.float32)
    attention[2, 4] = 1.0  # bottom row, fifth column: x 40..50, y 20..30
    picture = overlay(image, attention)
    assert picture.size == (60, 30) and picture.mode == "RGB"
    red = redness(picture)
    hottest_row, hottest_col = np.unravel_index(red.argmax(), red.shape)
    assert hottest_row >= 20 and 40 <= hottest_col < 50
    assert red[:10, :10].mean() < red[20:, 40:50].mean() - 100
    # a uniform map paints every region alike: no region stands out
    flat = redness(overlay(image, np.full((3, 6), 1 / 18, dtype=np.float32)))
    assert abs(flat[20:, 40:50].mean() - flat[20:, :10].mean()) < 1


@pytest.mark.skipif(cgroup_unavailable() is not None, reason=str(cgroup_unavailable()))
def test_a_camera_photos_overlay_is_drawn_in_half_a_gigabyte():
    with memory_cgroup(512 * 2**20) as cgroup:  # in floating-point colours, as before 2026-12-06, it took 2.2 GB
        done = subprocess.run([sys.executable, "-c", DRAW_A_CAMERA_PHOTO], cwd=PROJECT, preexec_fn=cgroup.enter,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0 and "(5472, 3648)" in done.stdout, (done.returncode, done.stderr[-300:])


def test_predict_writes_heatmaps_at_the_size_the_image_is_shown(tmp_path):
    turned = Image.new("RGB", (40, 20), "white")
    exif = turned.getexif()
    exif[EXIF_ORIENTATION] = 6  # shown rotated: 20 wide, 40 high
    turned.save(tmp_path / "turned.jpg", exif=exif)
    Image.new("RGBA", (33, 17), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    attention = np.full((7, 7), 1 / 49, dtype=np.float32)
    for name, size in (("turned.jpg", (20, 40)), ("clear.png", (33, 17))):
        written = write_heatmap(ImagePrediction(tmp_path / name, "a", 0.9, attention), tmp_path / "maps")
        assert written == tmp_path / "maps" / f"{name.split('.')[0]}_attention.png"
        assert Image.open(written).size == size


def test_the_evaluation_grid_gives_each_head_its_own_panel_beside_their_mean(tmp_path):
    images = torch.zeros(3, 1, 16, 16, dtype=torch.uint8)
    shown, titles = torch.full((3, 4, 4), 1 / 16), ["a", "b", "c"]
    figures.attention_overlays(images, shown, titles, tmp_path / "one.png")
    figures.attention_overlays(images, shown, titles, tmp_path / "heads.png", heads=torch.rand(3, 4, 4, 4))
    width, height = Image.open(tmp_path / "one.png").size
    assert width > 2 * height  # one map each: the three images side by side
    width, height = Image.open(tmp_path / "heads.png").size
    assert 1.2 < width / height < 1.7  # a row per image: the mean, then heads 1..4 (5 × 2.0 by 3 × 2.3 inches)
