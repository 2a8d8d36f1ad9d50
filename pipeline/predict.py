"""Classify images with a trained model and optionally write their attention overlays.

    python -m pipeline.predict IMAGE... [--model models:/NAME@champion | PATH.pt | PATH.onnx] [--heatmap DIR]

The default model is the registry's champion (`register.model_name` in params.yaml). An `.onnx`
file (the export stage's) runs in onnxruntime: classifying then needs neither PyTorch nor MLflow.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.config import Config, load_config
from pipeline.core.errors import PipelineError, run_cli
from pipeline.core.files import atomic_path
from pipeline.data.images import decode_image, load_image


@dataclass(frozen=True)
class ImagePrediction:
    path: Path
    label: str
    probability: float
    attention: np.ndarray  # h×w, sums to 1


@dataclass(frozen=True)
class Classifier:
    """A model's image format and classes, and a function from uint8 images N×C×H×W to
    (probabilities N×classes, attention N×h×w)."""

    classes: list[str]
    image_size: int
    channels: int
    run: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def onnx_classifier(path: Path) -> Classifier:
    """The export stage's ONNX file in onnxruntime."""
    from pipeline.model import onnx_file

    if not path.is_file():
        raise PipelineError(f"{path}: no such ONNX file; run the export stage first ('dvc repro export')")
    try:
        loaded = onnx_file.session(path)
        classes, size, channels = onnx_file.image_format(loaded)
    except Exception as error:  # onnxruntime raises its own types for foreign or damaged files
        reason = type(error).__name__
        raise PipelineError(f"{path}: not an ONNX export of this project ({reason}); rerun export") from None

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, attention = onnx_file.predict(loaded, images, len(images))
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True), attention

    return Classifier(classes, size, channels, run)


def torch_classifier(cfg: Config, reference: str) -> Classifier:
    """A model from a `models:/` (or `runs:/`) MLflow URI, or from a model file path, in PyTorch."""
    import torch

    from pipeline.model.model_file import load_model

    if reference.startswith(("models:/", "runs:/")):
        import mlflow
        from mlflow.exceptions import MlflowException

        from pipeline.core.tracking import connect

        connect(cfg)
        try:
            wrapper = mlflow.pyfunc.load_model(reference).unwrap_python_model()
        except MlflowException as error:
            raise PipelineError(
                f"{reference}: cannot load ({str(error).splitlines()[0]}); run the pipeline or pass --model PATH"
            ) from None
        model, info = wrapper.model, wrapper.info
    else:
        model, info = load_model(Path(reference))

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            out = model.eval()(torch.from_numpy(images))
        return out.logits.float().softmax(dim=1).numpy(), out.attention.float().numpy()

    return Classifier(info.classes, info.image_size, info.channels, run)


def load_classifier(cfg: Config, reference: str | None) -> Classifier:
    """`reference` (default: the registry's champion) as a classifier: ONNX files in onnxruntime,
    everything else in PyTorch."""
    reference = reference or f"models:/{cfg.registry.model_name}@champion"
    if reference.endswith(".onnx"):
        return onnx_classifier(Path(reference))
    return torch_classifier(cfg, reference)


def predict_images(classifier: Classifier, paths: list[Path]) -> list[ImagePrediction]:
    """Class, probability and attention map for each image file."""
    images = np.stack([load_image(p, classifier.image_size, classifier.channels) for p in paths])
    probabilities, attention = classifier.run(images)
    return [
        ImagePrediction(path, classifier.classes[int(row.argmax())], float(row.max()), maps)
        for path, row, maps in zip(paths, probabilities, attention, strict=True)
    ]


def write_heatmap(prediction: ImagePrediction, folder: Path) -> Path:
    """Save the image with its attention map overlaid, at the image's own resolution, as
    `<folder>/<image stem>_attention.png`."""
    from pipeline.core.overlay import overlay

    target = folder / f"{prediction.path.stem}_attention.png"
    folder.mkdir(parents=True, exist_ok=True)
    picture = overlay(decode_image(prediction.path, 3), prediction.attention)
    with atomic_path(target) as temporary:
        picture.save(temporary, format="PNG")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.predict", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path, help="image files to classify")
    parser.add_argument(
        "--model", help="models:/NAME@ALIAS, runs:/ID/model, a model file or an ONNX file (default: the champion)"
    )
    parser.add_argument("--heatmap", type=Path, metavar="DIR", help="write attention overlays into DIR")
    args = parser.parse_args()
    missing = [p for p in args.images if not p.is_file()]
    if missing:
        raise PipelineError(f"{missing[0]}: no such image file")
    classifier = load_classifier(load_config(), args.model)
    for prediction in predict_images(classifier, args.images):
        line = f"{prediction.path}\t{prediction.label}\t{prediction.probability:.4f}"
        if args.heatmap:
            line += f"\t{write_heatmap(prediction, args.heatmap)}"
        print(line)


if __name__ == "__main__":
    run_cli(main)
