"""The registered model's MLflow form: a pyfunc around the model file, returning attention maps too.

MLflow's default PyTorch flavour saves a `torch.export` graph, which loads back without the
attention output or `.to(device)`; this wrapper keeps the project's own module and its safe,
weights-only model file, so `models:/NAME@champion` predicts classes, probabilities and attention.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import torch

from pipeline.model.model_file import load_model


class AttentionClassifier(mlflow.pyfunc.PythonModel):
    """Input: images N×C×H×W (uint8, or floats in 0..255) of the model's size and channel count.

    Output: a dict with `class` (N names), `probabilities` (N×classes) and `attention` (N×h×w).
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.model, self.info = load_model(Path(context.artifacts["model_file"]))

    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> dict:
        images = torch.as_tensor(np.asarray(model_input))
        if images.ndim == 3:
            images = images.unsqueeze(1)
        with torch.no_grad():
            out = self.model(images)
        probabilities = out.logits.float().softmax(dim=1)
        return {
            "class": np.array([self.info.classes[i] for i in probabilities.argmax(1)]),
            "probabilities": probabilities.numpy(),
            "attention": out.attention.float().numpy(),
        }


mlflow.models.set_model(AttentionClassifier())
