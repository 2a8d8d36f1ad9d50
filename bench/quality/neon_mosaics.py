"""Which quarter holds the object: 2×2 mosaics of real aerial patches, exactly one with a tree crown.

    pip install --no-deps deepforest==2.1.0          # its wheel ships the images (bench/quality/neon_crowns.py)
    python -m bench.quality.neon_mosaics [--seeds 0] [--variants auto,seed_cnn] [--workdir DIR]

The localisation check the issue ran on held-back inspection images (2×2 mosaics, exactly one
defective, its quarter given as the box), on real images that install offline. The 64-px `crown`
and `open` patches of `bench.quality.neon_crowns` (crowns of at most 48 px, so a crown is an
object inside its quarter, not the quarter itself; the same train/test cut of the tiles) make
128-px mosaics (`build`):
- `crown`: each crown patch once, in a random quarter, beside three open patches drawn at random;
  its quarter is its box in `boxes.csv`;
- `open`: as many mosaics of four open patches drawn at random.
On them, in a fresh copy of the project, the train and evaluate stages run with the defaults of
`params.yaml` except the data section (`image_size: 128`) and a variant: `seed_cnn`, the defaults'
small CNN from scratch (a 32×32 map); `efficientnet`, EfficientNet-Lite0 fine-tuned from its
ImageNet weights at its own stride (a 4×4 map, whose quarters are 2×2 cells: the defaults' choice
at 128 px until 2026-12-03); `efficientnet-stride-16`, the same at stride 16 (8×8, what
`model.pretrained: true` gives it now); `top-down`, the seed CNN with the docs' augmentation for
top-down images (vertical flips, quarter turns). Reported: accuracy, and whether the
attention's peak is in the crown's quarter (chance 25 %; the centre cell is in one quarter, so the
centre point scores about 25 % too), beside Grad-CAM's. Writes `bench/results/neon_mosaics.json`;
prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from bench import RESULTS, names_of, seed_list
from bench.quality.neon_crowns import (
    cut_tile,
    deepforest_data,
    localisation_cells,
    measure,
    project_with,
    read_tile,
    with_changes,
)

PATCH, MAX_BOX, SIDE = 64, 48, 128
VARIANTS = {
    "seed_cnn": {"model": {"backbone": "seed_cnn"}},  # the defaults' network: a 32×32 map at 128 px
    "seed_cnn-steps-floor-only": {"model": {"backbone": "seed_cnn"}, "train": {"min_images": 0}},  # before min_images
    "efficientnet": {"model": {"pretrained": True, "output_stride": 32}},  # ImageNet weights, its own 4×4 map
    "efficientnet-stride-16": {"model": {"pretrained": True, "output_stride": 16}},  # 8×8, what auto gives it
    # the seed CNN with the docs' augmentation for top-down images
    "top-down": {"model": {"backbone": "seed_cnn"}, "train": {"augment": {"vflip": True, "rot90": True}}},
}


def mosaic(patches: list[np.ndarray]) -> np.ndarray:
    """Four PATCH-px patches as one 2×2 mosaic, in reading order."""
    return np.concatenate([np.concatenate(patches[:2], axis=1), np.concatenate(patches[2:], axis=1)], axis=0)


def write_mosaics(
    target: Path, split: str, labels: tuple[str, str], positives: list[np.ndarray], negatives: list[np.ndarray],
    rng: np.random.Generator,
) -> list[str]:  # fmt: skip
    """Write `target/<split>/<labels[0]>/`: each positive image once, in a random quarter beside three
    negatives drawn at random, and as many mosaics of four negatives in `target/<split>/<labels[1]>/`;
    the `boxes.csv` rows of the positives' quarters."""
    side, rows = positives[0].shape[0], []
    for label in labels:
        for index, positive in enumerate(positives):
            chosen = [negatives[i] for i in rng.choice(len(negatives), 4, replace=False)]
            path = f"{split}/{label}/{index:04d}.png"
            if label == labels[0]:
                quarter = int(rng.integers(4))
                chosen[quarter] = positive
                x0, y0 = side * (quarter % 2), side * (quarter // 2)
                rows.append(f"{path},{x0},{y0},{x0 + side},{y0 + side}")
            (target / path).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mosaic(chosen)).save(target / path)
    return rows


def build(source: Path, target: Path, seed: int = 0) -> dict[str, dict[str, int]]:
    """Write `target/{train,test}/{crown,open}/*.png` (SIDE-px mosaics) and `target/boxes.csv` (each
    crown mosaic's quarter) from the tiles in `source`; the number of images per split and class."""
    rng = np.random.default_rng(seed)
    parts: dict[str, dict[str, list[np.ndarray]]] = {}
    for xml in sorted(source.glob("*.xml")):
        for split, patches in cut_tile(*read_tile(xml), rng, PATCH, MAX_BOX).items():
            for label, pixels, _ in patches:
                parts.setdefault(split, {"crown": [], "open": []})[label].append(pixels)
    rows, counts = ["path,x_min,y_min,x_max,y_max"], {}
    for split, found in parts.items():
        rows += write_mosaics(target, split, ("crown", "open"), found["crown"], found["open"], rng)
        counts[split] = {"crown": len(found["crown"]), "open": len(found["crown"])}
    (target / "boxes.csv").write_text("\n".join(rows) + "\n")
    return counts


def prepare(project: Path, channels: int = 3) -> tuple[Path, dict, dict]:
    """A fresh copy of this project at `project` with the mosaics built, validated and preprocessed
    with `channels` (1: grayscale, as inspection images often are); its root, params and images per
    split and class."""
    build_into = partial(build, deepforest_data())
    return project_with(project, "neon-mosaics", build_into, image_size=SIDE, channels=channels)


def markdown(output: dict) -> str:
    rows = [
        "| variant | channels | seed | test accuracy | balanced accuracy "
        "| peak in the crown's quarter: attention / Grad-CAM (centre) "
        "| mass in the quarter: attention / Grad-CAM (area) | deletion AUC: attention / Grad-CAM (random) | train |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in output["runs"]:
        rows.append(
            f"| {r['variant']} | {r['channels']} | {r['seed']} "
            f"| {r['test_accuracy']:.1%} | {r['balanced_accuracy']:.1%} "
            f"{localisation_cells(r)}"
            f"| {r['deletion_auc_attention']:.3f} / {r['deletion_auc_gradcam']:.3f} ({r['deletion_auc_random']:.3f}) "
            f"| {r['train_seconds']:.0f} s |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.quality.neon_mosaics", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "attention-pipeline-mosaics")
    parser.add_argument("--seeds", type=seed_list, default="0", help="the train.seed values, comma-separated")
    parser.add_argument(
        "--variants", type=names_of(VARIANTS), default=",".join(VARIANTS), help=f"of {', '.join(VARIANTS)}"
    )
    parser.add_argument("--channels", type=int, choices=(1, 3), default=3, help="3: RGB (default); 1: grayscale")
    args = parser.parse_args()
    path = RESULTS / "neon_mosaics.json"
    output: dict = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    root, params, output["images"] = prepare(args.workdir / f"project-{args.channels}", args.channels)
    for seed in args.seeds:
        for variant in args.variants:
            measured = measure(root, with_changes(params, VARIANTS[variant]), variant, seed)
            figures = {"variant": variant, "channels": args.channels, **measured}
            same = (variant, seed, args.channels)
            output["runs"] = [r for r in output["runs"] if (r["variant"], r["seed"], r["channels"]) != same]
            output["runs"].append(figures)
            print(json.dumps(figures), flush=True)
            path.write_text(json.dumps(output, indent=2) + "\n")
    output["runs"].sort(key=lambda r: (-r["channels"], r["seed"], list(VARIANTS).index(r["variant"])))
    path.write_text(json.dumps(output, indent=2) + "\n")
    print(markdown(output))


if __name__ == "__main__":
    main()
