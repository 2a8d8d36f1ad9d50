"""Small generated datasets and params for fast, real runs of the stages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
    root: Path, per_class: dict[str, int], size: int = 16, seed: int = 0, classes: tuple[str, ...] = CLASSES
) -> Path:
    """Write `<root>/<split>/<class>/<n>.png` with `per_class[split]` unique images per class (the
    classes' pictures in the order of CLASSES, under the names `classes`)."""
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                Image.fromarray(synthetic_image(label, size, rng), mode="L").save(folder / f"{index:03d}.png")
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
