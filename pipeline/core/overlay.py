"""An attention map laid over the image it was computed for, at the image's own resolution (batch
prediction's heatmap files) or reduced to LARGEST (what the server sends and the demo page shows).

Needs no PyTorch: `pipeline.predict` draws it for ONNX models too.
"""

from __future__ import annotations

import matplotlib
import numpy as np
from PIL import Image, ImageDraw

# the long side of an overlay sent over HTTP or shown on the demo page: a 12-Mpx photo's at its own
# size was 18.9 MB of base64 and 3 s to serve, at 2,048 px (PNG level 1) 4.5 MB and 0.3 s (BENCHMARKS.md)
LARGEST = 2048
JET = (matplotlib.colormaps["jet"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8).ravel()


def reduced(picture: Image.Image) -> Image.Image:
    """`picture` with its long side at most LARGEST (aspect kept); a smaller one as it is."""
    scale = LARGEST / max(picture.size)
    if scale >= 1:
        return picture
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    return picture.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)


def overlay(image: Image.Image, attention: np.ndarray, opacity: float = 0.45) -> Image.Image:
    """The image (any size) in RGB with the h×w attention map upsampled over it in the 'jet' colours,
    and its peak marked with a white cross: at the image's own resolution. Drawn in 8-bit images
    (the map's 256 levels through a 'jet' palette, then PIL's blend): a 20-Mpx photo's overlay
    holds about 4 bytes a pixel, not the 100 of floating-point colours."""
    picture = image if image.mode == "RGB" else image.convert("RGB")
    level = attention.astype(np.float32) / max(float(attention.max()), 1e-12)
    heat = Image.fromarray((np.clip(level, 0, 1) * 255).round().astype(np.uint8), "L")
    heat = heat.resize(picture.size, Image.Resampling.BILINEAR)
    heat.putpalette(JET)
    result = Image.blend(picture, heat.convert("RGB"), opacity)
    rows, cols = attention.shape
    peak_row, peak_col = divmod(int(attention.argmax()), cols)
    x, y = (peak_col + 0.5) * picture.width / cols, (peak_row + 0.5) * picture.height / rows
    arm = max(2, min(picture.size) // 20)
    draw = ImageDraw.Draw(result)
    for line in (((x - arm, y), (x + arm, y)), ((x, y - arm), (x, y + arm))):
        draw.line(line, fill="white", width=max(1, arm // 3))
    return result
