"""Decoding one image into the model's input: the single definition used by preprocess and predict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from pipeline.errors import PipelineError


def load_image(path: Path, size: int, channels: int) -> np.ndarray:
    """Decode `path` (EXIF rotation applied) to a `channels`×`size`×`size` uint8 array."""
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise PipelineError(f"{path}: cannot decode image ({error})") from None
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
