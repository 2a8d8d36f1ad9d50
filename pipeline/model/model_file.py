"""The model file: weights plus everything needed to use them (config, classes, image format).

Holds only tensors and plain Python values, so it loads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from pydantic import ValidationError

from pipeline.core.config import ModelConfig
from pipeline.core.errors import PipelineError
from pipeline.core.files import atomic_path
from pipeline.data.images import WIDE_BITS
from pipeline.model.calibration import prior_offset
from pipeline.model.decision import Decision
from pipeline.model.network import AttentionCNN
from pipeline.model.unknown import Novelty

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelInfo:
    """What a model file says about the model besides its weights."""

    model_config: dict
    classes: list[str]
    image_size: int
    channels: int
    mean: list[float]
    std: list[float]
    run_id: str | None = None
    data_version: str | None = None
    decision: dict | None = None  # positive class, class weights (pipeline/model/decision.py); None: argmax
    temperature: float = 1.0  # divides the logits: calibrated probabilities (pipeline/model/calibration.py)
    novelty: dict | None = None  # the "unknown" detector's settings and threshold (pipeline/model/novelty.py)
    bit_depth: int = WIDE_BITS  # 16-bit images are read as this many bits (pipeline/data/images.py)

    @property
    def rule(self) -> Decision:
        """How this model's probabilities become one class."""
        return Decision.from_dict(self.decision)

    @property
    def detector(self) -> Novelty | None:
        """When this model answers "unknown" (None: a model trained without a detector)."""
        return Novelty.from_dict(self.novelty)

    @property
    def offset(self) -> torch.Tensor:
        """What calibration adds to this model's logits: the class weights' pull taken out (or zeros)."""
        weights = self.rule.weights
        return prior_offset(None if weights is None else torch.tensor(weights), len(self.classes))

    def build(self) -> AttentionCNN:
        """A fresh, untrained network of this architecture, with this model's calibration (and an
        empty detector bank of the recorded size, which the weights then fill)."""
        model = AttentionCNN(ModelConfig(**self.model_config), self.channels, len(self.classes), self.mean, self.std)
        model.temperature.fill_(self.temperature)
        model.offset.copy_(self.offset)
        if self.detector is not None:
            model.attach_novelty(self.detector.bank, self.detector.neighbours, self.detector.detector)
        return model


def save_model(path: Path, model: AttentionCNN, info: ModelInfo) -> None:
    """Write weights and info atomically (of a model as trained: one loaded with `fold=False`)."""
    if model.folded:
        raise PipelineError(
            f"{path}: this model's batch norms were folded for scoring; load it with fold=False to save it"
        )
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as temporary:
        torch.save({"format_version": FORMAT_VERSION, "state_dict": state, "info": asdict(info)}, temporary)


def load_model(path: Path, fold: bool = True) -> tuple[AttentionCNN, ModelInfo]:
    """Load a model file safely (no arbitrary unpickling) into an eval-mode network on the CPU; with
    `fold`, its batch norms folded into the convolutions before them for scoring
    (`AttentionCNN.fold_batch_norms`)."""
    if not path.is_file():
        raise PipelineError(
            f"{path}: no model file; run the train stage ('dvc repro train'), or bring back the last one DVC "
            f"recorded ('dvc checkout {path}')"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format_version") != FORMAT_VERSION:
            raise PipelineError(f"{path}: unsupported model file format {payload.get('format_version')!r}")
        info = ModelInfo(**payload["info"])
        model = info.build()
        model.load_state_dict(payload["state_dict"])
    except PipelineError:
        raise
    except (ValidationError, TypeError, KeyError, RuntimeError, AttributeError) as error:
        raise PipelineError(f"{path}: not a model file of this project ({type(error).__name__}); retrain it") from None
    except Exception as error:  # unpickling refusals and corrupt archives come in many types
        raise PipelineError(f"{path}: unreadable model file ({type(error).__name__}); retrain it") from None
    return (model.eval().fold_batch_norms() if fold else model.eval()), info
