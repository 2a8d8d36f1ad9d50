"""Decoding no more than the model needs: large JPEGs in draft mode, everything else as it is."""

import io

import numpy as np
import skimage.data
from PIL import Image

from pipeline.data.images import decode_image, load_image, model_input
from pipeline.model import pyfunc


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


def test_the_server_decodes_small_for_the_model_and_whole_for_the_overlay():
    jpeg = photo(1600, 1200, "JPEG")
    images, files = pyfunc.decode_files([pyfunc.png_base64(Image.open(io.BytesIO(jpeg)))], 32, 1)
    assert images.shape == (1, 1, 32, 32) and files and Image.open(io.BytesIO(files[0])).size == (1600, 1200)
    assert np.array_equal(pyfunc.decode_files([jpeg], 32, 1)[0][0], load_image(jpeg, 32, 1))  # as predict decodes
