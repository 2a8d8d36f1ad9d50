"""Classify images with a trained model and optionally write their attention overlays.

    python -m pipeline.predict IMAGE... [--model models:/NAME@champion | PATH] [--heatmap DIR]

The default model is the registry's champion (`register.model_name` in params.yaml).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline import figures
from pipeline.config import Config, load_config
from pipeline.errors import PipelineError, run_cli
from pipeline.images import load_image
from pipeline.model import AttentionCNN
from pipeline.model_file import ModelInfo, load_model


@dataclass(frozen=True)
class ImagePrediction:
    path: Path
    label: str
    probability: float
    attention: torch.Tensor  # h×w, sums to 1


def load_any_model(cfg: Config, reference: str | None) -> tuple[AttentionCNN, ModelInfo]:
    """A model from a `models:/` (or `runs:/`) MLflow URI, or from a model file path."""
    reference = reference or f"models:/{cfg.registry.model_name}@champion"
    if reference.startswith(("models:/", "runs:/")):
        import mlflow
        from mlflow.exceptions import MlflowException

        from pipeline.tracking import connect

        connect(cfg)
        try:
            wrapper = mlflow.pyfunc.load_model(reference).unwrap_python_model()
        except MlflowException as error:
            raise PipelineError(
                f"{reference}: cannot load ({str(error).splitlines()[0]}); run the pipeline or pass --model PATH"
            ) from None
        return wrapper.model, wrapper.info
    return load_model(Path(reference))


def predict_images(model: AttentionCNN, info: ModelInfo, paths: list[Path]) -> list[ImagePrediction]:
    """Class, probability and attention map for each image file."""
    images = torch.from_numpy(np.stack([load_image(p, info.image_size, info.channels) for p in paths]))
    with torch.no_grad():
        out = model.eval()(images)
    probabilities = out.logits.float().softmax(dim=1)
    best, index = probabilities.max(dim=1)
    return [
        ImagePrediction(path, info.classes[i], float(p), attention)
        for path, i, p, attention in zip(paths, index.tolist(), best.tolist(), out.attention, strict=True)
    ]


def write_heatmap(prediction: ImagePrediction, info: ModelInfo, folder: Path) -> Path:
    """Save the image with its attention map overlaid as `<folder>/<image stem>_attention.png`."""
    image = torch.from_numpy(load_image(prediction.path, info.image_size, info.channels))
    target = folder / f"{prediction.path.stem}_attention.png"
    title = f"{prediction.label} ({prediction.probability:.2f})"
    figures.attention_overlays(image[None], prediction.attention[None], [title], target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.predict", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path, help="image files to classify")
    parser.add_argument("--model", help="models:/NAME@ALIAS, runs:/ID/model, or a model file (default: the champion)")
    parser.add_argument("--heatmap", type=Path, metavar="DIR", help="write attention overlays into DIR")
    args = parser.parse_args()
    missing = [p for p in args.images if not p.is_file()]
    if missing:
        raise PipelineError(f"{missing[0]}: no such image file")
    cfg = load_config()
    model, info = load_any_model(cfg, args.model)
    for prediction in predict_images(model, info, args.images):
        line = f"{prediction.path}\t{prediction.label}\t{prediction.probability:.4f}"
        if args.heatmap:
            line += f"\t{write_heatmap(prediction, info, args.heatmap)}"
        print(line)


if __name__ == "__main__":
    run_cli(main)
