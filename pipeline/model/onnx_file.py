"""The ONNX model file the export stage writes: its input and output names, its metadata (class
names and image format), and running it in onnxruntime. Imports neither PyTorch nor MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.data.images import WIDE_BITS

INPUT, OUTPUTS = "images", ["logits", "attention", "embedding", "novelty"]  # novelty: models with a detector


def metadata(
    classes: list[str], image_size: int, channels: int, run_id: str | None, decision: dict | None = None,
    novelty: dict | None = None, bit_depth: int = WIDE_BITS,
) -> dict[str, str]:  # fmt: skip
    """What the file records besides the network, as ONNX metadata (strings); `decision`: the positive
    class's threshold (`pipeline/model/decision.py`), "null" for the most probable class; `novelty`:
    the "unknown" detector's threshold (`pipeline/model/novelty.py`), "null" for none; `bit_depth`:
    the bits 16-bit images are read as (`pipeline/data/images.py`)."""
    return {"classes": json.dumps(classes), "image_size": str(image_size), "channels": str(channels),
            "bit_depth": str(bit_depth), "mlflow_run_id": run_id or "", "decision": json.dumps(decision),
            "novelty": json.dumps(novelty)}  # fmt: skip


def session(path: Path):
    """An onnxruntime session on the CPU."""
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def image_format(loaded) -> tuple[list[str], int, int, int]:
    """Class names, image size, channels and bit depth (older files: 16) from a session's metadata."""
    recorded = loaded.get_modelmeta().custom_metadata_map
    bits = int(recorded.get("bit_depth", WIDE_BITS))
    return json.loads(recorded["classes"]), int(recorded["image_size"]), int(recorded["channels"]), bits


def decision(loaded) -> dict | None:
    """The decision rule a session's metadata records (None: the most probable class; older files have none)."""
    return json.loads(loaded.get_modelmeta().custom_metadata_map.get("decision", "null"))


def novelty(loaded) -> dict | None:
    """The "unknown" detector a session's metadata records (None: none; older files have none)."""
    return json.loads(loaded.get_modelmeta().custom_metadata_map.get("novelty", "null"))


def predict(loaded, images: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """The outputs for uint8 `images`, in batches, by name: `logits`, `attention` and, where the file
    has them, `embedding` and `novelty` (files written before the detector have neither)."""
    names = [output.name for output in loaded.get_outputs() if output.name in OUTPUTS]
    starts = range(0, len(images), batch_size)
    parts = [loaded.run(names, {INPUT: images[start : start + batch_size]}) for start in starts]
    return dict(zip(names, (np.concatenate(column) for column in zip(*parts, strict=True)), strict=True))
