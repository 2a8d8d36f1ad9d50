"""What a camera's fault changes in the images, whatever the model makes of them: three numbers per
image, measured on the model's input (uint8 N×C×H×W, the channels averaged to grey, 0..1):

- `brightness`: the mean grey level (exposure, lighting);
- `contrast`: the standard deviation of the grey levels (RMS contrast: a fogged lens, a faded lamp);
- `sharpness`: the mean absolute 4-neighbour Laplacian over the contrast (focus; sensor noise
  raises it). Over the contrast, so that a change of exposure alone does not move it.

The prediction log keeps them for every answer and the monitor compares their distributions with
the reference's (`drift.compare`): a line's camera going out of focus shows here even where the
model's answers barely change.
"""

from __future__ import annotations

import numpy as np

QUALITY = ("brightness", "contrast", "sharpness")
REASON = "the images are"  # how a verdict's reason about them begins: "the images are blurrier (…)"
CHANGE = {  # how a verdict says that a figure fell or rose
    "brightness": ("darker", "brighter"),
    "contrast": ("of lower contrast", "of higher contrast"),
    "sharpness": ("blurrier", "sharper or noisier"),
}
FLAT = 1 / 255  # a flat image (contrast 0) has sharpness 0, not a division by zero
CHUNK = 256  # images converted to float at a time


def measure(images) -> dict[str, np.ndarray]:
    """Each image's brightness, contrast and sharpness (float32 arrays of N) from uint8 N×C×H×W
    (a numpy array or a CPU tensor). Numpy alone: batch prediction of an ONNX file runs without PyTorch."""
    images = np.asarray(images)
    values = np.zeros((len(images), len(QUALITY)), dtype=np.float32)
    for start in range(0, len(images), CHUNK):
        chunk = images[start : start + CHUNK]
        grey = chunk.mean(axis=1, dtype=np.float32) if chunk.shape[1] > 1 else chunk[:, 0].astype(np.float32)
        grey /= 255
        brightness = grey.mean(axis=(1, 2))
        contrast = grey.std(axis=(1, 2))
        if min(grey.shape[1:]) >= 3:
            around = grey[:, :-2, 1:-1] + grey[:, 2:, 1:-1] + grey[:, 1:-1, :-2] + grey[:, 1:-1, 2:]
            edges = np.abs(around - 4 * grey[:, 1:-1, 1:-1]).mean(axis=(1, 2))
        else:
            edges = np.zeros(len(chunk), dtype=np.float32)
        values[start : start + CHUNK] = np.stack([brightness, contrast, edges / np.maximum(contrast, FLAT)], axis=1)
    return {name: values[:, i].copy() for i, name in enumerate(QUALITY)}
