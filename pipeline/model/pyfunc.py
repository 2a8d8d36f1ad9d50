"""The registered model's MLflow form: a pyfunc around the model file that takes image files (or
arrays) and answers with classes, the top k, attention maps and, on request, overlays.

MLflow's default PyTorch flavour saves a `torch.export` graph, which loads back without the
attention output or `.to(device)`; this wrapper keeps the project's own module and its safe,
weights-only model file.

Input (`model.predict(x, params)`, or `{"inputs": x, "params": {...}}` over HTTP), either
- encoded image files (PNG, JPEG, BMP or WebP, any size and mode), as bytes or base64 strings:
  decoded by the project's own rules (`pipeline/data/images.py`: EXIF rotation, 16-bit, alpha,
  palette, the pixel limit) and resized as the training images were; or
- uint8 images N×C×H×W (or N×H×W) already at the model's size and channel count.
Images whose headers declare more than `REQUEST_PIXELS` in all are refused (`TooManyPixels`, 413
over HTTP) before any is decoded; the rest are answered a CPU scoring batch at a time (`SERVING`), so
a request's memory stays bounded at any image size.
Params: `top_k` (default 5), `overlay` (default false; true adds each image's attention over
the image, at the image's own size up to a long side of `overlay.LARGEST` px, as a base64 PNG),
`embedding` (default false; true adds the pooled features N×C) and `quality` (default false; true
adds each input's `brightness`, `contrast` and `sharpness`: `pipeline/monitoring/image_quality.py`),
the last two for the prediction log.
Output: `class`, `probabilities` (N×classes), `top_k` (N lists of {class, probability}),
`attention` (N×h×w), for a model with a detector `novelty` (N scores) and `unknown` (N booleans:
the image is unlike anything the model was trained on; its class is still given), and, on
request, `overlay`.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.models import ModelSignature
from mlflow.types import ParamSchema, ParamSpec
from PIL import Image

from pipeline.core.config import IMAGE_FORMATS
from pipeline.core.errors import PipelineError
from pipeline.data.images import DEFAULT_MAX_PIXELS, WIDE_BITS, as_picture, decode_image, load_image
from pipeline.model.decision import top_classes
from pipeline.model.model_file import ModelInfo, load_model
from pipeline.monitoring.image_quality import measure
from pipeline.training.runtime import Runtime, predict_batches

SIGNATURE = ModelSignature(
    params=ParamSchema(
        [
            ParamSpec("top_k", "integer", 5),
            ParamSpec("overlay", "boolean", False),
            ParamSpec("embedding", "boolean", False),
            ParamSpec("quality", "boolean", False),
        ]
    )  # fmt: skip
)  # inputs unchecked by MLflow: image files and arrays are both welcome, and checked here


REQUEST_PIXELS = DEFAULT_MAX_PIXELS  # all images of one request together: one as large as validation accepts (64 Mpx)
# the forward passes of a request: fp32 on the CPU, channels last (1.2-1.6x faster than the layout the
# model loads in, 2-core AVX2), a CPU scoring batch at a time (256 RGB images at 224 px: 657 MB; in one
# pass, killed under a 3 GB limit); BENCHMARKS.md
SERVING = Runtime(torch.device("cpu"), None)


class BadInput(ValueError):
    """A request the model cannot answer, with a one-line reason for the caller (HTTP `status`)."""

    status = 400


class TooManyPixels(BadInput):
    """The request's images declare more pixels in all than REQUEST_PIXELS."""

    status = 413


def declared_pixels(data: bytes) -> int:
    """The pixels an encoded image declares in its header (0 when the header is unreadable: decoding
    then refuses it with its reason)."""
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            return image.width * image.height
    except (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError):
        return 0


def image_bytes(item: object, index: int) -> bytes:
    """One encoded image file from bytes or a base64 string."""
    if isinstance(item, bytes | bytearray):
        data = bytes(item)
    elif isinstance(item, str):
        try:
            data = base64.b64decode(item.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise BadInput(f"image {index}: not base64; send each image file as base64 text") from None
    else:
        raise BadInput(f"image {index}: expected an encoded image file (base64 text), got {type(item).__name__}")
    if not data:
        raise BadInput(f"image {index}: empty")
    return data


def check_pixels(files: list[bytes]) -> None:
    """Refuse encoded images whose headers declare more than REQUEST_PIXELS in all (nothing decoded)."""
    total = sum(declared_pixels(data) for data in files)
    if total > REQUEST_PIXELS:
        raise TooManyPixels(
            f"the images declare {total:,} pixels in all, over the {REQUEST_PIXELS:,} one request may hold: "
            "send fewer or smaller images"
        )


def decode_files(items: list, size: int, channels: int, bits: int = WIDE_BITS) -> tuple[np.ndarray, list[bytes]]:
    """Encoded image files as the model's input (N×C×H×W uint8, decoded no larger than it needs, a
    16-bit file read as `bits`-bit), and the files; refused before any is decoded when their headers
    declare more than REQUEST_PIXELS in all."""
    files = [image_bytes(item, index) for index, item in enumerate(items)]
    check_pixels(files)
    images = []
    for index, data in enumerate(files):
        try:
            images.append(load_image(data, size, channels, formats=IMAGE_FORMATS, bits=bits))
        except PipelineError as error:
            reason = str(error).removeprefix("image: ")
            raise BadInput(f"image {index}: {reason}; send PNG, JPEG, BMP, WebP or TIFF files") from None
    return np.stack(images), files


def as_images(model_input_: object, info: ModelInfo) -> tuple[np.ndarray, list[bytes] | None]:
    """The request's images as uint8 N×C×H×W, and the encoded files (None for arrays)."""
    if isinstance(model_input_, bytes | str):
        model_input_ = [model_input_]
    if isinstance(model_input_, list) and all(isinstance(item, bytes | bytearray | str) for item in model_input_):
        if not model_input_:
            raise BadInput("no images in the request")
        return decode_files(model_input_, info.image_size, info.channels, info.bit_depth)
    try:
        array = np.asarray(model_input_)
    except ValueError:
        raise BadInput("inputs: images of different shapes; send image files or one N×C×H×W array") from None
    if array.size == 0:
        raise BadInput("no images in the request")
    if array.dtype.kind in "USO" and array.ndim == 1:
        return decode_files(list(array), info.image_size, info.channels, info.bit_depth)
    if array.dtype.kind not in "iuf":
        raise BadInput("inputs: expected base64 image files or uint8 images N×C×H×W")
    if array.ndim == 3:
        array = array[:, None]
    expected = (info.channels, info.image_size, info.image_size)
    if array.ndim != 4 or array.shape[1:] != expected:
        raise BadInput(f"inputs: images of shape {array.shape[1:]}, expected {expected} (or send image files)")
    if array.min() < 0 or array.max() > 255:
        raise BadInput("inputs: pixel values outside 0..255")
    if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):  # 0..1 floats would become 0 and 1
        raise BadInput("inputs: pixel values must be whole numbers 0..255 (scale 0..1 images by 255)")
    return array.astype(np.uint8), None


def png_base64(picture: Image.Image) -> str:
    """An image as a base64 PNG file (what an HTTP client sends, and what overlays come back as)."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)  # 5x faster than the default 6 for 20 % more bytes
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class AttentionClassifier(mlflow.pyfunc.PythonModel):
    """The project's model file behind MLflow's pyfunc interface (see the module docstring)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        model, self.info = load_model(Path(context.artifacts["model_file"]))
        self.model = SERVING.prepare(model)

    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> dict:  # MLflow: no schema
        params = params or {}
        top_k = min(max(int(params.get("top_k", 5)), 1), len(self.info.classes))
        images, files = as_images(model_input, self.info)
        pixels = torch.from_numpy(images)
        out = predict_batches(self.model, pixels, SERVING.scoring_batch(pixels, len(pixels)), SERVING)
        probabilities = out.logits.softmax(dim=1).numpy()
        attention = out.attention.numpy()
        ranked = top_classes(probabilities, top_k)
        answer = {
            "class": np.array([self.info.classes[i] for i in self.info.rule.classes(probabilities, self.info.classes)]),
            "probabilities": probabilities,
            "top_k": [
                [{"class": self.info.classes[i], "probability": float(row[i])} for i in order]
                for row, order in zip(probabilities, ranked, strict=True)
            ],
            "attention": attention,
        }
        detector = self.info.detector
        if detector is not None and out.novelty is not None:
            answer["novelty"] = out.novelty.numpy()
            answer["unknown"] = detector.unknown(answer["novelty"]).tolist()
        if params.get("embedding"):
            answer["embedding"] = out.embedding.numpy()
        if params.get("quality"):
            answer |= measure(images)
        if params.get("overlay"):
            from pipeline.core.overlay import overlay, reduced

            if files:  # the files at their own size (up to LARGEST), for the overlays, decoded one at a time
                bits = self.info.bit_depth
                shown = (decode_image(data, self.info.channels, formats=IMAGE_FORMATS, bits=bits) for data in files)
            else:
                shown = (as_picture(image) for image in images)
            drawn = (overlay(reduced(picture), maps) for picture, maps in zip(shown, attention, strict=True))
            answer["overlay"] = [png_base64(picture) for picture in drawn]
        return answer


mlflow.models.set_model(AttentionClassifier())
