"""The ONNX model file the export stage writes: its input and output names, its metadata (class
names and image format), and running it in onnxruntime. Imports neither PyTorch nor MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

INPUT, OUTPUTS = "images", ["logits", "attention"]


def metadata(
    classes: list[str], image_size: int, channels: int, run_id: str | None, decision: dict | None = None
) -> dict[str, str]:
    """What the file records besides the network, as ONNX metadata (strings); `decision`: the positive
    class's threshold (`pipeline/model/decision.py`), "null" for the most probable class."""
    return {"classes": json.dumps(classes), "image_size": str(image_size), "channels": str(channels),
            "mlflow_run_id": run_id or "", "decision": json.dumps(decision)}  # fmt: skip


def session(path: Path):
    """An onnxruntime session on the CPU."""
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def image_format(loaded) -> tuple[list[str], int, int]:
    """Class names, image size and channels from a session's metadata."""
    recorded = loaded.get_modelmeta().custom_metadata_map
    return json.loads(recorded["classes"]), int(recorded["image_size"]), int(recorded["channels"])


def decision(loaded) -> dict | None:
    """The decision rule a session's metadata records (None: the most probable class; older files have none)."""
    return json.loads(loaded.get_modelmeta().custom_metadata_map.get("decision", "null"))


def predict(loaded, images: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits and attention maps for uint8 `images`, in batches."""
    logits, attention = [], []
    for start in range(0, len(images), batch_size):
        out = loaded.run(OUTPUTS, {INPUT: images[start : start + batch_size]})
        logits.append(out[0])
        attention.append(out[1])
    return np.concatenate(logits), np.concatenate(attention)
