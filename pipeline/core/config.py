"""The one typed configuration: `params.yaml` loaded once into frozen, validated pydantic models.

The defaults here are the committed `params.yaml`'s values (a test holds them equal): a params file
without a key gets the value the project documents, not another one.

Every stage receives a `Config`; none reads YAML or builds paths on its own. Paths in the
config are relative to the project root (or absolute) and resolved through `Config.paths`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from pipeline.core import recipe
from pipeline.core.errors import PipelineError
from pipeline.core.paths import ProjectPaths, project_root


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    source: Literal["fashion-mnist", "cluttered-fashion-mnist", "imagefolder"] = "fashion-mnist"
    path: str = Field("data/fashion-mnist", min_length=1)
    classes: list[str] | None = None  # the classes to train on, in this order; other class folders are left out
    positive_class: str | None = None  # the class to find (a defect): flagged above a threshold chosen for a recall
    image_size: int = Field(28, ge=8, le=1024)
    channels: Literal[1, 3, "auto"] = "auto"  # auto: 1 when every training image is grayscale, else 3 (preprocess)
    # 16-bit images: the bits their samples use (a 12-bit camera's 0..4095), read onto 0..255; auto:
    # the camera depth (8, 10, 12, 14, 16) holding the training split's bright level (hot pixels aside)
    bit_depth: Annotated[int, Field(ge=8, le=32)] | Literal["auto"] = "auto"
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0, lt=0.5)
    seed: int = 42
    canvas: int = Field(60, ge=56, le=1024)  # cluttered-fashion-mnist: canvas side; the 28-px item covers ≤ 1/4
    clutter: int = Field(4, ge=0, le=64)  # cluttered-fashion-mnist: 8×8 fragments of other items per canvas
    # preprocess also publishes the shards there (s3://bucket/prefix); streamed training reads them from there
    shards_url: Annotated[str, Field(pattern=r"^s3://[a-z0-9][a-z0-9.-]+(/.*)?$")] | None = None


IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "TIFF")  # validate.formats' default, and what the served model decodes


class ValidateConfig(_Section):
    on_error: Literal["fail", "skip"] = "fail"
    min_images_per_class: int = Field(10, ge=1)
    max_imbalance: float = Field(100.0, ge=1.0)
    min_side: int = Field(8, ge=1)
    max_side: int = Field(16384, ge=1)
    max_pixels: int = Field(2**26, ge=1)  # 64 Mpx: a 61-Mpx full-frame camera's or a 48-Mpx phone's photo passes
    formats: list[Literal["PNG", "JPEG", "BMP", "WEBP", "GIF", "TIFF"]] = list(IMAGE_FORMATS)

    @model_validator(mode="after")
    def _sides_ordered(self) -> ValidateConfig:
        if self.min_side > self.max_side:
            raise ValueError("min_side must not exceed max_side")
        return self


class ModelConfig(_Section):
    """`auto` keys are filled by `load_config` from the data (pipeline/core/recipe.py)."""

    backbone: Literal["auto", "seed_cnn", "resnet18", "vgg11_bn", "efficientnet_lite0"] = "auto"
    pretrained: bool | Literal["auto"] = "auto"
    pretrained_weights: str | None = None
    widths: list[int] = Field([32, 64, 128], min_length=1)
    convs_per_block: int = Field(2, ge=1, le=4)
    output_stride: Literal["auto", 1, 2, 4, 8, 16, 32] | None = "auto"  # the attention map's; null: the backbone's
    attention: Literal["auto", "soft", "gated", "none"] = "auto"  # gated: Ilse et al.'s tanh ⊙ sigmoid scores
    attention_dim: int = Field(128, ge=1)
    attention_heads: int = Field(1, ge=1, le=16)  # maps, each pooling its own vector (concatenated)
    dropout: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _weights_available(self) -> ModelConfig:
        if self.pretrained is True and self.backbone == "seed_cnn":
            raise ValueError("seed_cnn has no pretrained weights; use efficientnet_lite0, resnet18 or vgg11_bn")
        if self.pretrained is True and self.backbone in {"resnet18", "vgg11_bn"} and not self.pretrained_weights:
            raise ValueError(
                f"torchvision cannot download {self.backbone}'s ImageNet weights offline: download torchvision's "
                f"{self.backbone} file where there is internet and set model.pretrained_weights to its path"
            )
        if self.pretrained_weights and (
            self.pretrained is False or self.backbone not in {"auto", "resnet18", "vgg11_bn"}
        ):
            raise ValueError("pretrained_weights is only for resnet18 or vgg11_bn with pretrained: true")
        if self.attention_heads > 1 and self.attention == "none":
            raise ValueError("attention_heads > 1 needs attention: soft or gated (average pooling has no heads)")
        return self


class AugmentConfig(_Section):
    hflip: bool = True
    vflip: bool = False  # top-down images may try it (measured: docs/your-own-images.md)
    rot90: bool = False  # quarter turns, likewise
    max_shift: int = Field(4, ge=0)
    zoom: float = Field(1.0, ge=1.0, le=4.0)  # random resized crop: up to this zoom, anywhere in the image
    rotate: float = Field(0.0, ge=0, le=180)  # random rotation within ± this many degrees
    brightness: float = Field(0.0, ge=0, lt=1)  # pixel values times 1 ± up to this
    contrast: float = Field(0.0, ge=0, lt=1)  # distance from the image's mean times 1 ± up to this
    erasing: float = Field(0.0, ge=0, le=1)  # share of images with one rectangle replaced by noise


class UnknownConfig(_Section):
    accept: float | None = Field(0.95, ge=0.5, lt=1)  # share of validation images the detector accepts (null: none)
    neighbours: int = Field(5, ge=1)  # k: the distance to the k-th nearest training image's features
    bank: int = Field(5000, ge=10)  # training images whose features the model keeps (a seeded random choice)


class TrainConfig(_Section):
    epochs: int = Field(18, ge=1)
    batch_size: int = Field(256, ge=1)
    min_steps: int = Field(1000, ge=0)  # epochs grow until the run has this many optimizer steps
    min_images: int = Field(32_000, ge=0)  # and until it has trained on this many images
    min_steps_per_epoch: int = Field(32, ge=1)  # the batch shrinks until an epoch has this many
    class_weights: Literal["balanced", "none"] = "balanced"  # each class counts by 1 / its share
    balance: Literal["sampling", "loss"] = "sampling"  # how: each class a share of every epoch by weight, or the loss
    keep: Literal["last", "best"] = "last"  # the final weights, or the epoch with the lowest validation loss
    calibrate: bool = True  # temperature scaling, class weights' pull out (pipeline/model/calibration.py)
    positive_recall: float = Field(0.9, gt=0, le=1)  # with data.positive_class: the share of its images to find
    positive_confidence: float = Field(0.5, ge=0.5, lt=1)  # how sure the validation split must make that share
    unknown: UnknownConfig = UnknownConfig()  # the "unknown" answer (pipeline/model/novelty.py)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(4e-3, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    attention_entropy: float = Field(0.0, ge=0)  # weight of the attention map's normalised entropy in the loss
    augment: AugmentConfig = AugmentConfig()
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False
    processes: int = Field(1, ge=1)
    freeze_epochs: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"  # fine-tuning: epochs of the head alone
    backbone_lr: Annotated[float, Field(gt=0)] | Literal["auto"] | None = "auto"  # fine-tuning; null: lr
    checkpoint_seconds: float = Field(60, ge=0)  # a checkpoint after an epoch once this long since the last
    loader: Literal["auto", "memory", "stream"] = "auto"  # the splits held in memory or streamed from their shards


class EvaluateConfig(_Section):
    batch_size: int = Field(512, ge=1)
    overlay_images: int = Field(16, ge=1, le=64)
    faithfulness_images: int = Field(500, ge=0)
    deletion_fill: Literal["blur", "mean"] = "blur"  # what a deleted cell becomes: the image blurred, or the mean


class ExportConfig(_Section):
    batch_size: int = Field(512, ge=1)
    min_agreement: float = Field(0.999, ge=0, le=1)
    parity_images: int = Field(2000, ge=0)  # test images checked against PyTorch (0: all)
    quantize: bool = False


class RegisterConfig(_Section):
    model_name: str = Field("attention-classifier", min_length=1)
    # auto: significantly above always answering the test split's most common class, in `metric`
    min_accuracy: Annotated[float, Field(ge=0, le=1)] | Literal["auto"] = "auto"
    # what "beats the champion" (and the floor) means; balanced accuracy: a rare class counts as much as a common one
    metric: Literal["accuracy", "balanced_accuracy", "macro_f1"] = "balanced_accuracy"
    min_delta: float = Field(0.0, ge=0)
    max_p_value: float | None = Field(0.05, gt=0, le=1)


class TrackingConfig(_Section):
    experiment: str = Field("attention-pipeline", min_length=1)


class ScheduleConfig(_Section):
    cron: str = "0 3 * * 1"
    timezone: str = "Europe/Berlin"

    @model_validator(mode="after")
    def _known_timezone(self) -> ScheduleConfig:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}; use an IANA name like 'Europe/Berlin'") from None
        if len(self.cron.split()) != 5:
            raise ValueError(f"cron {self.cron!r} needs 5 fields: minute hour day month weekday")
        return self


class MonitoringConfig(_Section):
    log: str | None = "logs/predictions"  # the prediction log folder (null: nothing logged)
    log_images: bool = False  # also keep each image as the model saw it
    keep_days: int = Field(90, ge=1)  # retention: older day partitions are deleted by the monitoring run
    window_hours: float = Field(24, gt=0)  # the recent window compared with the reference
    min_records: int = Field(500, ge=10)  # fewer records in the window: no verdict
    max_unknown_rate: float = Field(0.2, gt=0, le=1)  # a higher share of "unknown" answers calls for retraining
    embedding_auc: float = Field(0.55, gt=0.5, lt=1)  # the domain classifier's ROC AUC above which embeddings drifted
    retrain: bool = True  # start the retraining flow when drift or the unknown rate passes its threshold
    cron: str = "0 * * * *"  # the monitoring deployment's schedule (python -m flows.schedule), in schedule.timezone

    @model_validator(mode="after")
    def _five_fields(self) -> MonitoringConfig:
        if len(self.cron.split()) != 5:
            raise ValueError(f"cron {self.cron!r} needs 5 fields: minute hour day month weekday")
        return self


# The sections `validate` and `register` are attributes of the same names, as in params.yaml. They
# shadow BaseModel.validate (deprecated since pydantic 2) and ABCMeta.register on the class only,
# which pydantic warns about; on a config they are its sections.
warnings.filterwarnings("ignore", r'Field name "(validate|register)" in "Config" shadows', UserWarning)


class Config(_Section):
    """The whole of `params.yaml`, one attribute per section. Unknown keys anywhere are errors."""

    data: DataConfig = DataConfig()
    validate: ValidateConfig = ValidateConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    export: ExportConfig = ExportConfig()
    register: RegisterConfig = RegisterConfig()
    tracking: TrackingConfig = TrackingConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    _root: Path = PrivateAttr(default_factory=project_root)
    _chosen: tuple[str, ...] = PrivateAttr(default=())

    @property
    def root(self) -> Path:
        """The project root that relative paths are resolved against."""
        return self._root

    @property
    def chosen(self) -> tuple[str, ...]:
        """What the `auto` keys became and why, one line each (empty when none was `auto`)."""
        return self._chosen

    @property
    def paths(self) -> ProjectPaths:
        """Where every stage reads and writes, resolved from the project root."""
        return ProjectPaths(self.root)

    def prediction_log(self) -> Path | None:
        """`monitoring.log` resolved against the project root (None: no log)."""
        if self.monitoring.log is None:
            return None
        path = Path(self.monitoring.log).expanduser()
        return path if path.is_absolute() else self.root / path

    def source_path(self) -> Path:
        """`data.path` resolved against the project root."""
        path = Path(self.data.path).expanduser()
        return path if path.is_absolute() else self.root / path

    def portable_source(self) -> str:
        """`data.path` without this machine's absolute paths: relative to the project root when
        inside it, else `…/<folder name>` (the data version identifies the data itself)."""
        path = self.source_path()
        if not Path(self.data.path).expanduser().is_absolute():
            return self.data.path
        if path.is_relative_to(self.root):
            return path.relative_to(self.root).as_posix()
        return f"…/{path.name}"

    def dataset_name(self) -> str:
        """The data's name: the built-in source's, or the image folder's own."""
        return self.data.source if self.data.source != "imagefolder" else self.source_path().name

    def as_flat_params(self) -> dict[str, str]:
        """Every setting as `section.key` strings, the form MLflow params take (no absolute paths)."""
        flat = {key: str(value) for key, value in flatten(self.model_dump(mode="json")).items()}
        flat["data.path"] = self.portable_source()
        return flat


def flatten(sections: dict) -> dict[str, object]:
    """Nested settings as `section.key` pairs: `{"train": {"epochs": 2}}` → `{"train.epochs": 2}`."""
    flat: dict[str, object] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            flat[prefix] = value

    walk("", sections)
    return flat


def fill_auto(config: Config) -> tuple[dict, tuple[str, ...]]:
    """`config`'s settings with every `auto` key of the model and fine-tuning filled from the data
    (pipeline/core/recipe.py), and what each became, with why."""
    model, train, size = config.model, config.train, config.data.image_size
    chosen = []
    attention = model.attention
    if attention == "auto":
        attention, why = recipe.attention(config.data.source)
        chosen.append(f"model.attention {attention}: {why}")
    name, weights, stride = model.backbone, model.pretrained, model.output_stride
    if name == "auto":
        name, why = recipe.backbone(weights)
        chosen.append(f"model.backbone {name}: {why}")
    if weights == "auto":
        weights = recipe.pretrained(name, model.pretrained_weights)
        chosen.append(f"model.pretrained {str(weights).lower()}")
    if stride == "auto":
        stride = recipe.output_stride(name, weights, model.widths, size)
        side = -(-size // stride)
        chosen.append(f"model.output_stride {stride}: an attention map of {side}×{side} cells")
    freeze, backbone_lr = train.freeze_epochs, train.backbone_lr
    if freeze == "auto":
        freeze = recipe.freeze_epochs(weights)
        chosen.append(f"train.freeze_epochs {freeze}")
    if backbone_lr == "auto":
        backbone_lr = recipe.backbone_lr(weights, train.lr)
        chosen.append(f"train.backbone_lr {backbone_lr:g} (lr / {recipe.BACKBONE_LR_DIVISOR})" if backbone_lr else
                      "train.backbone_lr null (lr)")  # fmt: skip
    raw = config.model_dump(by_alias=True)
    raw["model"].update(backbone=name, pretrained=weights, output_stride=stride, attention=attention)
    raw["train"].update(freeze_epochs=freeze, backbone_lr=backbone_lr)
    return raw, tuple(chosen)


def read_sections(path: Path, missing: str) -> dict:
    """A YAML file of sections like params.yaml's, or PipelineError in one line (`missing`: what to
    say when there is no such file)."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise PipelineError(f"{path}: {missing}") from None
    except yaml.YAMLError as error:
        raise PipelineError(f"{path}: not valid YAML ({error.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise PipelineError(f"{path}: expected a mapping of sections at the top level")
    return raw


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    key = "".join(char if char.isprintable() else repr(char)[1:-1] for char in key)  # one line, always
    if first["type"] == "extra_forbidden":
        return f"unknown key '{key}'"
    if first["type"] == "value_error" and isinstance(first.get("input"), dict):  # a check across a section's keys
        return f"'{key}': {first['msg'].removeprefix('Value error, ')}"
    return f"'{key}': {first['msg']} (got {first.get('input')!r})"


def load_config(path: Path | None = None, overrides: dict | None = None) -> Config:
    """Load and validate `params.yaml` (default: the project root's), with optional overrides.

    Raises PipelineError with a one-line message naming the offending key.
    """
    path = path or project_root() / "params.yaml"
    raw = read_sections(path, "no params file; run from the project root")
    for dotted, value in (overrides or {}).items():
        section = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            section = section.setdefault(part, {})
        section[leaf] = value
    try:
        filled, chosen = fill_auto(Config.model_validate(raw))
        config = Config.model_validate(filled)
    except ValidationError as error:
        count = error.error_count()
        more = f" (+{count - 1} more)" if count > 1 else ""
        raise PipelineError(f"{path.name}: {_describe(error)}{more}; fix it in {path}") from None
    config._root = path.resolve().parent
    config._chosen = chosen
    return config
