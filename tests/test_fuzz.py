"""Fuzzing the two parsers a user feeds directly: the image scanner and the params loader. Whatever
the input, the only failure allowed is the project's own one-line PipelineError."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.core.config import Config, load_config
from pipeline.core.errors import PipelineError
from pipeline.data.image_folder import inspect_image
from pipeline.data.images import load_image

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # PIL's notes on the damaged files it reads
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def encoded(format_name: str) -> bytes:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8), "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=format_name)
    return buffer.getvalue()


SEEDS = {name: encoded(name) for name in ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")}


def scan_and_load(data: bytes) -> None:
    """Scan one file as the validate stage does; if it is accepted as decodable, preprocessing must load it."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train" / "c" / "x.img"
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        row = inspect_image(path, Path(folder), "train", "c", max_pixels=1_000_000)
        assert row["sha256"] and isinstance(row["decodable"], bool)
        assert row["decodable"] or row["error"]
        try:
            pixels = load_image(path, 8, 3, max_pixels=1_000_000)
        except PipelineError as error:
            assert not row["decodable"], f"scanned as decodable but preprocessing fails: {error}"
            assert "\n" not in str(error)
        else:
            assert pixels.shape == (3, 8, 8) and pixels.dtype == np.uint8


@FUZZ
@given(st.binary(max_size=3000))
def test_scanner_survives_arbitrary_bytes(data):
    scan_and_load(data)


@FUZZ
@given(
    st.sampled_from(sorted(SEEDS)),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    st.integers(1, 10_000),
)
@example("PNG", [(35, 0)], 176)  # found by this test: PIL raised SyntaxError ("broken PNG file") past decoding
def test_scanner_survives_damaged_images(format_name, flips, keep):
    data = bytearray(SEEDS[format_name][:keep])
    for position, value in flips:
        if data:
            data[position % len(data)] = value
    scan_and_load(bytes(data))


KEYS = st.sampled_from(sorted({*Config.model_fields, "validate", "register", "train", "model", "epochs", "x"}))
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def load_from_text(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "params.yaml"
        path.write_text(text)
        try:
            load_config(path)
        except PipelineError as error:
            assert "\n" not in str(error)


@FUZZ
@given(st.dictionaries(KEYS, VALUES, max_size=6))
def test_config_loader_survives_arbitrary_structures(params):
    load_from_text(yaml.safe_dump(params, allow_unicode=True))


@FUZZ
@given(st.text(max_size=300))
def test_config_loader_survives_arbitrary_text(text):
    load_from_text(text)
