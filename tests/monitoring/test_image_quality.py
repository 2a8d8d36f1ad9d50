"""Image quality figures: each moves with the camera fault it is named for, and not with the others."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from pipeline.monitoring.image_quality import QUALITY, measure


def scenes(count: int, seed: int, side: int = 48) -> np.ndarray:
    """uint8 N×1×side×side: smooth texture with a bright object somewhere, as a camera sees a part."""
    rng = np.random.default_rng(seed)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (count, side, side)), (0, 1.5, 1.5))
    images = 90 + 120 * texture / texture.std()
    for image, (row, col) in zip(images, rng.integers(4, side - 16, (count, 2)), strict=True):
        image[row : row + 12, col : col + 12] += 60
    return images.clip(0, 255).astype(np.uint8)[:, None]


def medians(images: np.ndarray) -> dict[str, float]:
    return {name: float(np.median(values)) for name, values in measure(images).items()}


def test_each_figure_moves_with_its_own_fault_only():
    plain = scenes(200, seed=0)
    before = medians(plain)
    darker = medians((plain * 0.6).astype(np.uint8))
    blurred = medians(ndimage.gaussian_filter(plain.astype(np.float32), (0, 0, 1.5, 1.5)).round().astype(np.uint8))
    noisy = medians((plain + np.random.default_rng(1).normal(0, 12, plain.shape)).clip(0, 255).astype(np.uint8))
    assert darker["brightness"] < 0.65 * before["brightness"] and darker["contrast"] < 0.65 * before["contrast"]
    assert darker["sharpness"] == pytest.approx(before["sharpness"], rel=0.03)  # exposure is not focus
    assert blurred["sharpness"] < 0.6 * before["sharpness"]
    assert blurred["brightness"] == pytest.approx(before["brightness"], rel=0.01)
    assert noisy["sharpness"] > 1.2 * before["sharpness"]
    assert noisy["brightness"] == pytest.approx(before["brightness"], rel=0.02)


def test_colour_is_measured_as_its_grey_and_arrays_as_tensors():
    grey = scenes(5, seed=2)
    colour = np.repeat(grey, 3, axis=1)
    for name, values in measure(grey).items():
        np.testing.assert_allclose(measure(colour)[name], values, rtol=1e-5)
        np.testing.assert_allclose(measure(torch.from_numpy(grey))[name], values, rtol=1e-6)
    many = scenes(600, seed=3)  # more than one chunk: each image keeps its own figures
    np.testing.assert_allclose(measure(many)["sharpness"][-5:], measure(many[-5:])["sharpness"], rtol=1e-5)


def test_flat_tiny_and_no_images_give_numbers():
    flat = measure(np.full((2, 1, 16, 16), 128, dtype=np.uint8))
    assert flat["contrast"].tolist() == [0, 0] and flat["sharpness"].tolist() == [0, 0]
    tiny = measure(np.zeros((1, 3, 2, 2), dtype=np.uint8))
    assert all(np.isfinite(tiny[name]).all() for name in QUALITY)
    assert all(len(values) == 0 for values in measure(np.zeros((0, 1, 8, 8), dtype=np.uint8)).values())
