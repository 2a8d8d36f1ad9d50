"""A real example with human-drawn boxes: tree crowns in NEON aerial images, end to end.

    pip install --no-deps deepforest==2.1.0          # its wheel ships the images; nothing else of it is used
    python -m bench.quality.neon_crowns [--seeds 0,1] [--workdir DIR] [--before]

The data: the four NEON RGB tiles (10 cm per pixel) with hand-drawn tree-crown boxes that the
`deepforest` wheel ships in its `data/` folder (Pascal VOC XML; 951 boxes over three sites). The
rule that cuts them into an image folder with `boxes.csv` (`build`):
- each tile is split by rows: its top three quarters give training images, the bottom quarter test
  images, so no test pixel was ever seen in training (neighbouring patches overlap);
- `crown`: for each box of at most PATCH - 8 px whose whole box lies in one part, a PATCH×PATCH
  patch around it at a random place (seeded) that holds the whole box; to `boxes.csv` go that box
  and every other crown with at least half of its box in the patch (clipped to it): a peak on any
  crown is a hit;
- `open`: the PATCH×PATCH patches of a grid with PATCH px steps that no box touches (meadow, road,
  bare ground, shadow).
Then, in a fresh copy of the project, the stages run with the defaults of `params.yaml` except the
data section (image folder, `image_size` PATCH, RGB): accuracy, balanced accuracy, recall of each
class, and the attention's pointing game and mass in the box beside Grad-CAM's and the centre
point's. `--before` also runs the defaults this project had before they adapted to the data size
and balanced the classes. Writes `bench/results/neon_crowns.json`; prints a markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from bench import RESULTS, seed_list
from bench.default_run import copy_project, run
from pipeline.core.paths import project_root

PROJECT = project_root()
PATCH = 64
TEST_SHARE = 0.25
# the defaults before 2026-11-27: the params' batch and epochs whatever the data's size, no class weights
BEFORE = {"train": {"min_steps": 0, "min_images": 0, "min_steps_per_epoch": 1, "class_weights": "none"}}


def deepforest_data() -> Path:
    """The `data/` folder of the installed deepforest wheel (not imported: it needs packages we lack)."""
    spec = importlib.util.find_spec("deepforest")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: deepforest is not installed: pip install --no-deps deepforest==2.1.0")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def read_tile(xml: Path) -> tuple[np.ndarray, np.ndarray]:
    """A tile's RGB pixels and its boxes (x_min, y_min, x_max, y_max) from its Pascal VOC file."""
    root = ElementTree.parse(xml).getroot()
    boxes = [
        [round(float(item.find("bndbox").find(key).text)) for key in ("xmin", "ymin", "xmax", "ymax")]
        for item in root.iter("object")
    ]
    with Image.open(xml.parent / root.find("filename").text) as image:
        return np.asarray(image.convert("RGB")), np.array(boxes, dtype=int).reshape(-1, 4)


def cut_tile(
    pixels: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, patch: int = PATCH, max_box: int = PATCH - 8
) -> dict[str, list]:
    """The tile's `patch`-px `crown` patches (with their boxes, of at most `max_box` px) and `open`
    patches, by split (the module's rule)."""
    height, width = pixels.shape[:2]
    covered = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in boxes:
        covered[max(0, y0) : y1, max(0, x0) : x1] = True
    border = int(height * (1 - TEST_SHARE))
    parts = {"train": (0, border), "test": (border, height)}
    out: dict[str, list] = {"train": [], "test": []}
    for split, (top, bottom) in parts.items():
        for x0, y0, x1, y1 in boxes:
            fits = max(x1 - x0, y1 - y0) <= max_box and x0 >= 0 and x1 <= width
            if not fits or y0 < top or y1 > bottom:
                continue
            left = rng.integers(max(0, x1 - patch), min(x0, width - patch) + 1)
            upper = rng.integers(max(top, y1 - patch), min(y0, bottom - patch) + 1)
            cut = pixels[upper : upper + patch, left : left + patch]
            out[split].append(("crown", cut, crowns_in(boxes, left, upper, patch)))
        for upper in range(top, bottom - patch + 1, patch):
            for left in range(0, width - patch + 1, patch):
                if not covered[upper : upper + patch, left : left + patch].any():
                    out[split].append(("open", pixels[upper : upper + patch, left : left + patch], None))
    return out


def crowns_in(boxes: np.ndarray, left: int, upper: int, patch: int) -> np.ndarray:
    """The boxes with at least half of their area in the patch at (`left`, `upper`), clipped to it,
    in the patch's pixels."""
    shifted = boxes - np.array([left, upper, left, upper])
    clipped = shifted.clip(0, patch)
    area = np.prod(shifted[:, 2:] - shifted[:, :2], axis=1)
    inside = np.prod((clipped[:, 2:] - clipped[:, :2]).clip(min=0), axis=1)
    return clipped[inside >= 0.5 * area]


def build(
    source: Path, target: Path, seed: int = 0, patch: int = PATCH, max_box: int = PATCH - 8
) -> dict[str, dict[str, int]]:
    """Write the image folder `target/{train,test}/{crown,open}/*.png` of `patch`-px patches and
    `target/boxes.csv` from the tiles in `source` (crowns of at most `max_box` px); the number of
    images per split and class."""
    rng = np.random.default_rng(seed)
    rows, counts = ["path,x_min,y_min,x_max,y_max"], {}
    for xml in sorted(source.glob("*.xml")):
        for split, patches in cut_tile(*read_tile(xml), rng, patch, max_box).items():
            for label, pixels, crowns in patches:
                index = counts.setdefault(split, {}).setdefault(label, 0)
                counts[split][label] += 1
                path = f"{split}/{label}/{xml.stem}_{index:04d}.png"
                (target / path).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(target / path)
                rows += [f"{path},{x0},{y0},{x1},{y1}" for x0, y0, x1, y1 in ([] if crowns is None else crowns)]
    (target / "boxes.csv").write_text("\n".join(rows) + "\n")
    return counts


def with_changes(params: dict, changes: dict) -> dict:
    """A copy of `params` with `changes` ({section: {key: value}}, nested as params are) applied."""
    params = yaml.safe_load(yaml.safe_dump(params))
    for key, value in changes.items():
        params[key] = with_changes(params[key], value) if isinstance(value, dict) else value
    return params


def project_with(
    project: Path, folder: str, build_into: Callable[[Path], dict], **data: object
) -> tuple[Path, dict, dict]:
    """A fresh copy of this project at `project` whose image folder `data/<folder>` `build_into`
    writes (returning its images per split and class), with the `data` settings given, validated
    and preprocessed; its root, params and images per split and class."""
    root = copy_project(PROJECT, project)
    counts = build_into(root / "data" / folder)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"].update(source="imagefolder", path=f"data/{folder}", **data)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(root, sys.executable, "-m", "pipeline.validate")
    run(root, sys.executable, "-m", "pipeline.preprocess")
    return root, params, counts


def prepare(project: Path, patch: int = PATCH, max_box: int = PATCH - 8) -> tuple[Path, dict, dict]:
    """A fresh copy of this project at `project` with the crowns built (`build`), validated and
    preprocessed at `patch` px; its root, params and images per split and class."""
    return project_with(
        project, "neon-crowns", lambda target: build(deepforest_data(), target, patch=patch, max_box=max_box),
        image_size=patch, channels=3,
    )  # fmt: skip


def measure(root: Path, params: dict, name: str, seed: int) -> dict:
    """Train and evaluate with `params` and `train.seed` `seed`; the figures of the run."""
    params = {**params, "train": {**params["train"], "seed": seed}}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    seconds, _ = run(root, sys.executable, "-m", "pipeline.train")
    run(root, sys.executable, "-m", "pipeline.evaluate")
    trained = json.loads((root / "metrics" / "train.json").read_text())
    evaluated = json.loads((root / "metrics" / "eval.json").read_text())
    checked = evaluated["attention"]
    return {
        "defaults": name, "seed": seed, "train_seconds": round(seconds, 1), "batch_size": trained["batch_size"],
        "epochs": trained["epochs"], "kept_epoch": trained["kept_epoch"], "steps": trained["steps"],
        "test_accuracy": evaluated["accuracy"], "balanced_accuracy": evaluated["balanced_accuracy"],
        "roc_auc": evaluated["roc_auc"],
        **{f"recall_{label}": m["recall"] for label, m in evaluated["per_class"].items()},
        **checked.get("localisation", {}),  # where boxes are known
        **{f"deletion_auc_{order}": auc for order, auc in checked.get("deletion_auc", {}).items()},
        **{
            f"deletion_auc_{order}_called_{label}": auc
            for label, called in checked.get("by_predicted_class", {}).items()
            for order, auc in called["deletion_auc"].items()
        },
        "deletion_fill": params["evaluate"]["deletion_fill"],
        "deletion_edges": "soft",  # bilinear cell masks since 2026-12-03; "hard" before (bench.quality.deletion_edges)
    }  # fmt: skip


def localisation_cells(run: dict) -> str:
    """A run's two localisation cells of a markdown row: pointing game and mass in the boxes, the
    attention's / Grad-CAM's (centre point, boxes' area)."""
    centre = run["pointing_game_centre_baseline"]
    return (
        f"| {run['pointing_game']:.1%} / {run['gradcam_pointing_game']:.1%} ({centre:.1%}) "
        f"| {run['box_attention_mass']:.1%} / {run['gradcam_box_mass']:.1%} ({run['box_area_share']:.1%}) "
    )


def markdown(output: dict) -> str:
    counts = output["images"]
    head = (
        f"NEON tree crowns (`python -m bench.quality.neon_crowns`): {PATCH}×{PATCH} px RGB patches of the four tiles "
        f"in the `deepforest` wheel, train {counts['train']}, test {counts['test']} (bottom quarter of each tile); "
        "default params except the data section:"
    )
    rows = [
        "| defaults | seed | batch × epochs (steps) | test accuracy | balanced accuracy | recall crown / open "
        "| pointing game: attention / Grad-CAM (centre) | mass in box: attention / Grad-CAM (area) "
        "| deletion AUC: attention / Grad-CAM (random), fill | train |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in output["runs"]:
        rows.append(
            f"| {r['defaults']} | {r['seed']} | {r['batch_size']} × {r['epochs']} ({r['steps']}) "
            f"| {r['test_accuracy']:.1%} | {r['balanced_accuracy']:.1%} "
            f"| {r['recall_crown']:.1%} / {r['recall_open']:.1%} "
            f"{localisation_cells(r)}"
            f"| {r['deletion_auc_attention']:.3f} / {r['deletion_auc_gradcam']:.3f} ({r['deletion_auc_random']:.3f}), "
            f"{r['deletion_fill']} "
            f"| {r['train_seconds']:.0f} s |"
        )
    return head + "\n\n" + "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.quality.neon_crowns", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "attention-pipeline-neon")
    parser.add_argument("--seeds", type=seed_list, default="0,1", help="the train.seed values, comma-separated")
    parser.add_argument("--before", action="store_true", help="also run the defaults before 2026-11-27")
    args = parser.parse_args()
    root, params, counts = prepare(args.workdir / "project")
    variants = {"this version's": params}
    if args.before:
        variants["before 2026-11-27"] = with_changes(params, BEFORE)
    runs = []
    for name, variant in variants.items():
        for seed in args.seeds:
            runs.append(measure(root, variant, name, seed))
            print(json.dumps(runs[-1]), flush=True)
    images = {split: sum(by_class.values()) for split, by_class in counts.items()}
    output = {"patch": PATCH, "images": images, "per_class": counts, "runs": runs}
    (RESULTS / "neon_crowns.json").write_text(json.dumps(output, indent=2) + "\n")
    print(markdown(output))


if __name__ == "__main__":
    main()
