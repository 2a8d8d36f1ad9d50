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
CHANGE = {  # how a verdict says that a figure fell or rose
    "brightness": ("darker", "brighter"),
    "contrast": ("of lower contrast", "of higher contrast"),
    "sharpness": ("blurrier", "sharper or noisier"),
}
FLAT = 1 / 255  # a flat image (contrast 0) has sharpness 0, not a division by zero
CHUNK = 256  # images converted to float at a time
LAPLACIAN = [[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]


def measure(images) -> dict[str, np.ndarray]:
    """Each image's brightness, contrast and sharpness (float32 arrays of N) from uint8 N×C×H×W
    (a numpy array or a tensor)."""
    import torch  # here: the log's writers import QUALITY without PyTorch

    images = torch.as_tensor(images)
    laplacian = torch.tensor(LAPLACIAN).view(1, 1, 3, 3)
    if not len(images):
        return {name: np.zeros(0, dtype=np.float32) for name in QUALITY}
    parts = []
    for chunk in images.split(CHUNK):
        grey = chunk.float().mean(dim=1, keepdim=True) / 255
        contrast, brightness = torch.std_mean(grey, dim=(1, 2, 3), correction=0)
        if min(grey.shape[2:]) < 3:
            edges = torch.zeros_like(contrast)
        else:
            edges = torch.nn.functional.conv2d(grey, laplacian).abs().mean(dim=(1, 2, 3))
        parts.append(torch.stack([brightness, contrast, edges / contrast.clamp(min=FLAT)], dim=1))
    values = torch.cat(parts).numpy()
    return {name: values[:, i].copy() for i, name in enumerate(QUALITY)}
