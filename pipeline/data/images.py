"""Decoding one image into the model's input: the single definition used by validate, preprocess and predict.

Every image becomes 8-bit grayscale or RGB the same way: EXIF rotation applied, 16-bit samples
scaled (not clipped) to 8 bits from the bits the dataset's camera uses (`bits`: a 12-bit camera
stores 0..4095 in 16-bit files; scaled from 16 bits those would land in 16 of 256 grey levels),
32-bit float samples from 0..1 (or 0..255 when some are above 1),
transparent pixels laid over white, palette and CMYK converted. An image declaring more than
`max_pixels` pixels is refused from its header, before decoding.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from pipeline.core.config import ValidateConfig
from pipeline.core.errors import PipelineError, first_line

DEFAULT_MAX_PIXELS: int = ValidateConfig.model_fields["max_pixels"].default  # also for predict, serving, the demo
WIDE_BITS = 16  # the bits of a wide (16-bit) image's samples when nothing says fewer
CAMERA_BITS = (8, 10, 12, 14, 16)  # the depths sensors and scanners store
EXIF_ORIENTATION = 0x0112
_WIDE_INTEGER_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


class ImageRefused(ValueError):
    """An image that declares too many pixels to decode safely (a decompression bomb)."""


def check_size(image: Image.Image, max_pixels: int) -> None:
    """Refuse an opened (not yet decoded) image whose header declares more than `max_pixels` pixels."""
    pixels = image.width * image.height
    if pixels > max_pixels:
        raise ImageRefused(
            f"declares {image.width}x{image.height} = {pixels:,} pixels, over validate.max_pixels {max_pixels:,} "
            "(a decompression bomb, or raise the limit)"
        )


def draft_for(image: Image.Image, at_least: int | None) -> None:
    """Before decoding: a JPEG opened for a model of side `at_least` decodes at the smallest of its
    1/8, 1/4 and 1/2 scales that still covers `at_least`×`at_least` (PIL's draft mode: the decoder
    reads every byte but skips the detail; a 5472×3648 drone photo for a 128-px model costs 1/64 of
    the pixels). Other formats decode at their own size."""
    if at_least is not None and image.format == "JPEG":
        image.draft(image.mode, (at_least, at_least))


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright)."""
    try:
        return int(image.getexif().get(EXIF_ORIENTATION, 1))
    except (ValueError, TypeError, OSError):
        return 1


HOT_PIXEL_SHARE = 0.001  # an image's brightest samples that may be hot or stuck pixels rather than content


def bright_sample(image: Image.Image) -> int | None:
    """The level a decoded wide-integer (16-bit) image's samples stay at or under, its brightest
    0.1 % aside (a few hot or stuck pixels do not set the depth; under 1,000 pixels: its largest
    sample); None for any other mode."""
    if image.mode not in _WIDE_INTEGER_MODES or not image.width * image.height:
        return None
    samples = np.asarray(image).ravel()
    kept = min(len(samples) - 1, int(len(samples) * (1 - HOT_PIXEL_SHARE)))
    return int(np.partition(samples, kept)[kept])


def sample_bits(brightest: int | None) -> int:
    """The cameras' bit depth that holds a wide image's bright level (`bright_sample`): the smallest
    of 8, 10, 12, 14 and 16 bits (a dark 12-bit set, up to 1,800, still reads as 12-bit), above 16
    the level's own; WIDE_BITS when unknown."""
    if brightest is None:
        return WIDE_BITS
    needed = int(brightest).bit_length()
    return next((depth for depth in CAMERA_BITS if depth >= needed), min(32, needed))


def normalise(image: Image.Image, channels: int, bits: int = WIDE_BITS) -> Image.Image:
    """Upright, 8-bit, `channels` (1: 'L', 3: 'RGB') version of a decoded image; a wide-integer
    image's range 0..2**bits - 1 maps onto 0..255 (brighter samples clip), a 32-bit float image's
    0..1 when none of its samples is above 1, else 0..255 (NaN: 0). Turned upright in place,
    and copied only to change its mode: a 64-Mpx photo is not held three times over."""
    ImageOps.exif_transpose(image, in_place=True)
    if image.mode in _WIDE_INTEGER_MODES or image.mode == "F":
        samples = np.nan_to_num(np.asarray(image, dtype=np.float64))
        scale = (2**bits - 1) / 255 if image.mode != "F" else 1 / 255 if samples.max(initial=0) <= 1 else 1.0
        image = Image.fromarray(np.clip(np.round(samples / scale), 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    mode = "L" if channels == 1 else "RGB"
    return image if image.mode == mode else image.convert(mode)


def decode_image(
    source: Path | bytes, channels: int, max_pixels: int = DEFAULT_MAX_PIXELS, formats: tuple[str, ...] | None = None,
    at_least: int | None = None, bits: int = WIDE_BITS,
) -> Image.Image:  # fmt: skip
    """Decode an image file (its path, or its bytes) to an upright 8-bit image of `channels` at its
    own size (a 16-bit file's samples read as `bits`-bit); `formats` (PIL's names, e.g. ("PNG",
    "JPEG")) limits what is opened; `at_least` (the side the model needs): `draft_for`."""
    name = source if isinstance(source, Path) else "image"
    try:
        with Image.open(source if isinstance(source, Path) else io.BytesIO(source), formats=formats) as image:
            check_size(image, max_pixels)
            draft_for(image, at_least)
            return normalise(image, channels, bits)
    except (
        OSError,
        ValueError,
        EOFError,
        SyntaxError,
        Image.DecompressionBombError,
    ) as error:  # PIL's broken-file types
        raise PipelineError(f"{name}: cannot decode image ({pil_message(error)})") from None


def pil_message(error: BaseException) -> str:
    """PIL's message for a file it cannot read, without the in-memory buffer it may name
    ("cannot identify image file <_io.BytesIO object at 0x7f…>": nothing a user can act on)."""
    return re.sub(r" <_io\.BytesIO object at 0x[0-9a-f]+>", "", first_line(error))


def model_input(image: Image.Image, size: int) -> np.ndarray:
    """A decoded image as the model takes it: resized to `size`×`size`, uint8 C×H×W."""
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def load_image(
    source: Path | bytes, size: int, channels: int, max_pixels: int = DEFAULT_MAX_PIXELS,
    formats: tuple[str, ...] | None = None, bits: int = WIDE_BITS,
) -> np.ndarray:  # fmt: skip
    """Decode an image file (path or bytes) to the model's input, a `channels`×`size`×`size` uint8
    array: the one way validation, preprocessing, prediction, the server and the demo all make it
    (`bits`: the model's, `ModelInfo.bit_depth`)."""
    return model_input(decode_image(source, channels, max_pixels, formats, at_least=size, bits=bits), size)


def as_picture(image: np.ndarray) -> Image.Image:
    """A uint8 C×H×W image (one or three channels, as the model takes it) as a PIL image."""
    pixels = image.transpose(1, 2, 0)
    return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
