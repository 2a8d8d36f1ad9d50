"""Decoding no more than the model needs: large JPEGs in draft mode, everything else as it is."""

import io
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
from PIL import Image

from bench.speed.memory_limit import cgroup_unavailable, memory_cgroup
from pipeline.core.errors import PipelineError
from pipeline.data.images import decode_image, load_image, model_input
from pipeline.model import pyfunc
from tests.synthetic import PROJECT

CHECK_AND_READ = """
import sys
from pathlib import Path
from pipeline.data import image_folder
root = Path(sys.argv[1])
files = image_folder.scan(root, at_least=64).files
assert files["decodable"].all(), files["error"].tolist()
print(image_folder.load(root, list(files["path"]), 64, 3).shape)
"""


def photo(width: int, height: int, format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).resize((width, height)).save(buffer, format=format, quality=90)
    return buffer.getvalue()


def test_a_large_jpeg_is_decoded_only_as_large_as_the_model_needs():
    jpeg = photo(2400, 1600, "JPEG")
    assert decode_image(jpeg, 3).size == (2400, 1600)  # at its own size unless asked otherwise
    assert decode_image(jpeg, 3, at_least=64).size == (300, 200)  # 1/8: still covers 64×64
    assert decode_image(jpeg, 3, at_least=250).size == (600, 400)  # 1/4: 1/8 would be under 250 high
    reduced = load_image(jpeg, 64, 3)
    full = model_input(decode_image(jpeg, 3), 64)
    assert reduced.shape == (3, 64, 64) and np.abs(reduced.astype(int) - full).mean() < 3  # the same picture
    png = photo(800, 600, "PNG")
    assert decode_image(png, 3, at_least=64).size == (800, 600)  # no draft mode: decoded whole


def test_a_camera_size_photo_is_read_with_the_default_limit_and_a_bomb_is_not():
    drone = photo(5472, 3648, "JPEG")  # 20 Mpx: over the 16.7 Mpx a side of 4096 allowed before 2026-12-06
    assert load_image(drone, 64, 3).shape == (3, 64, 64)  # as predict and the demo read it
    bomb = io.BytesIO()
    Image.new("1", (9000, 9000)).save(bomb, format="PNG")  # 81 Mpx declared in a few kB
    with pytest.raises(PipelineError, match="81,000,000 pixels, over validate.max_pixels 67,108,864"):
        load_image(bomb.getvalue(), 64, 3)


def test_the_server_decodes_small_for_the_model_and_whole_for_the_overlay():
    jpeg = photo(1600, 1200, "JPEG")
    images, files = pyfunc.decode_files([pyfunc.png_base64(Image.open(io.BytesIO(jpeg)))], 32, 1)
    assert images.shape == (1, 1, 32, 32) and files and Image.open(io.BytesIO(files[0])).size == (1600, 1200)
    assert np.array_equal(pyfunc.decode_files([jpeg], 32, 1)[0][0], load_image(jpeg, 32, 1))  # as predict decodes


@pytest.mark.skipif(cgroup_unavailable() is not None, reason=str(cgroup_unavailable()))
def test_the_largest_image_the_defaults_accept_is_checked_and_read_in_half_a_gigabyte(tmp_path):
    folder = tmp_path / "images" / "a"
    folder.mkdir(parents=True)
    Image.linear_gradient("L").resize((8192, 8192)).convert("RGB").save(folder / "largest.png")  # 64 Mpx: 192 MB
    with memory_cgroup(512 * 2**20) as cgroup:  # held three times over, as before 2026-12-06, it was killed here
        done = subprocess.run([sys.executable, "-c", CHECK_AND_READ, str(tmp_path / "images")], cwd=PROJECT,
                              preexec_fn=cgroup.enter, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0 and "(1, 3, 64, 64)" in done.stdout, (done.returncode, done.stderr[-300:])


def test_a_float_tiff_is_read_from_0_to_1_when_its_samples_are_and_from_0_to_255_otherwise(tmp_path):
    ramp = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)  # reflectance, a normalised scan
    Image.fromarray(ramp, "F").save(tmp_path / "unit.tif")
    Image.fromarray(ramp * 255, "F").save(tmp_path / "bytes.tif")
    unit, byte_range = (np.asarray(decode_image(tmp_path / name, 1)) for name in ("unit.tif", "bytes.tif"))
    expected = np.round(ramp * 255).astype(np.uint8)
    assert np.array_equal(unit, expected) and np.array_equal(byte_range, expected)  # not 0s and 1s: black
