"""Images the model was not trained for, made here without downloads: the out-of-distribution sets
that evaluate scores the "unknown" detector against (`pipeline/model/novelty.py`).

Each set is built from files that ship inside installed packages, cut and converted to the model's
own image format (size and channels), seeded so every run sees the same images:
- `photos`: random crops (10–60 % of the shorter side) of scikit-image's and scikit-learn's photographs
  (an astronaut, a cat, coffee, a rocket, a street, flowers, the moon, a retina, coins, …);
- `textures`: random crops of scikit-image's brick, grass and gravel textures;
- `faces`: the 100 face crops of scikit-image's Labeled Faces in the Wild subset (and their mirror images);
- `digits`: scikit-learn's handwritten digits (8×8, enlarged);
- `noise`: uniform random pixels, and `flat`: one random colour per image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SETS = ("photos", "textures", "faces", "digits", "noise", "flat")
PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "retina", "moon", "coins",
          "hubble_deep_field", "cell", "immunohistochemistry")  # fmt: skip
TEXTURES = ("brick", "grass", "gravel")


def _skimage(names: tuple[str, ...]) -> list[np.ndarray]:
    import skimage.data

    return [getattr(skimage.data, name)() for name in names]


def _photographs() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return _skimage(PHOTOS) + list(load_sample_images().images)


def _as_format(picture: np.ndarray, size: int, channels: int) -> np.ndarray:
    """A uint8 H×W(×3) array as the model's C×size×size uint8 input."""
    image = Image.fromarray(np.ascontiguousarray(picture))
    image = image.convert("L" if channels == 1 else "RGB").resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def _crops(pictures: list[np.ndarray], count: int, size: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    images = []
    for index in range(count):
        picture = pictures[index % len(pictures)]
        height, width = picture.shape[:2]
        side = int(rng.uniform(0.1, 0.6) * min(height, width))
        top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
        images.append(_as_format(picture[top : top + side, left : left + side], size, channels))
    return np.stack(images)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    low, high = values.min(), values.max()
    return np.round(255 * (values - low) / max(high - low, 1e-9)).astype(np.uint8)


def outlier_set(name: str, size: int, channels: int, count: int = 300, seed: int = 0) -> np.ndarray:
    """One out-of-distribution set as uint8 images N×C×size×size (N = `count`; `faces`: at most 200)."""
    rng = np.random.default_rng(seed)
    if name == "photos":
        return _crops(_photographs(), count, size, channels, rng)
    if name == "textures":
        return _crops(_skimage(TEXTURES), count, size, channels, rng)
    if name == "faces":
        import skimage.data

        faces = skimage.data.lfw_subset()[:100]  # the first 100 are faces, the rest are not
        faces = np.concatenate([faces, faces[:, :, ::-1]])[:count]
        return np.stack([_as_format(_to_uint8(face), size, channels) for face in faces])
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits().images[rng.permutation(1797)[:count]]
        return np.stack([_as_format(_to_uint8(digit), size, channels) for digit in digits])
    if name == "noise":
        return rng.integers(0, 256, (count, channels, size, size), dtype=np.uint8)
    if name == "flat":
        colours = rng.integers(0, 256, (count, channels, 1, 1), dtype=np.uint8)
        return np.broadcast_to(colours, (count, channels, size, size)).copy()
    raise ValueError(f"unknown out-of-distribution set {name!r} (one of {', '.join(SETS)})")
