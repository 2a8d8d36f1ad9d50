"""Small generated datasets and params for fast, real runs of the stages."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

PROJECT = Path(__file__).resolve().parents[1]
CLASSES = ("bars", "columns", "squares")


def synthetic_image(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A noisy grayscale image whose class is visible: a horizontal bar, a vertical bar, or a square."""
    pixels = rng.integers(0, 60, (size, size), dtype=np.uint8)
    at = int(rng.integers(2, size - 6))
    if label == 0:
        pixels[at : at + 3, :] = 230
    elif label == 1:
        pixels[:, at : at + 3] = 230
    else:
        other = int(rng.integers(2, size - 6))
        pixels[at : at + 5, other : other + 5] = 230
    return pixels


def write_dataset(
    root: Path,
    per_class: dict[str, int],
    size: int = 16,
    seed: int = 0,
    classes: tuple[str, ...] = CLASSES,
    colour: bool = False,
) -> Path:
    """Write `<root>/<split>/<class>/<n>.png` with `per_class[split]` unique images per class (the
    classes' pictures in the order of CLASSES, under the names `classes`); `colour`: RGB, each image
    the grey picture in a random tint."""
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                pixels = synthetic_image(label, size, rng)
                if colour:
                    pixels = (pixels[..., None] * rng.uniform(0.5, 1.0, 3)).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{index:03d}.png")
    return root


def small_params(image_path: str, **sections: dict) -> dict:
    """The project's params.yaml, changed for a tiny, fast run on a generated image folder."""
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    changes = {
        "data": {"source": "imagefolder", "path": image_path, "image_size": 16, "val_fraction": 0.2},
        "validate": {"min_images_per_class": 5},
        "model": {"widths": [8, 16], "attention_dim": 8},
        "train": {
            "epochs": 1,
            "batch_size": 32,
            "lr": 0.01,
            "augment": {"hflip": True, "max_shift": 1},  # 16 px
            "checkpoint_seconds": 0,  # after every epoch, as the resume tests expect
            "min_steps": 0,
            "min_images": 0,
            "min_steps_per_epoch": 1,  # the batch and epochs as given (tests/training/test_plan.py)
        },
        "evaluate": {"overlay_images": 4},
        "register": {"min_accuracy": 0.0},
    }
    for changed in (changes, sections):
        for name, values in changed.items():
            params[name].update(values)
    return params


def write_small_fashion_mnist(folder: Path, train: int, test: int) -> Path:
    """The first `train` and `test` images of Debian's Fashion-MNIST, as the same four IDX files."""
    from pipeline.data.fashion_mnist import write_subset

    return write_subset(PROJECT / "data" / "fashion-mnist", folder, train, test)


def prepare(images: Path, project: Path, patch: pytest.MonkeyPatch, **sections: dict):
    """A project at `project` on the image folder `images` with `small_params` changed by `sections`,
    PIPELINE_ROOT set with `patch`, validated and preprocessed; its config."""
    from pipeline import preprocess, validate
    from pipeline.core.config import load_config

    project.mkdir()
    (project / "params.yaml").write_text(yaml.safe_dump(small_params(str(images), **sections)))
    patch.setenv("PIPELINE_ROOT", str(project))
    patch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config()
    validate.run(cfg)
    preprocess.run(cfg)
    return cfg


@contextmanager
def prepared_project(root: Path, per_class: dict[str, int], **sections: dict) -> Iterator:
    """`prepare` on a generated image folder (`root/images`), the project at `root/project`, with
    PIPELINE_ROOT set for the block."""
    images = write_dataset(root / "images", per_class)
    with pytest.MonkeyPatch.context() as patch:
        yield prepare(images, root / "project", patch, **sections)
