"""Thin dark defects in textured grayscale: generated solar-cell images, in the shape of an inspection set.

    python -m bench.quality.cell_cracks [--seeds 0] [--variants seed_cnn,efficientnet-stride-16] [--workdir DIR]

The issue's held-back check is a few thousand 300×300 grayscale inspection images, two classes
about 69/31, a 75/25 split, trained at `image_size: 128` with the defaults. It is kept from this
project, and no real inspection set installs offline, so this builds one with the same shape
(`build`): 2,600 electroluminescence-like cells, 300×300, grey, 31 % `defective`, split 75/25.
Every cell has what makes such images hard: bright busbars and faint fingers, a smooth
illumination, and on multicrystalline cells (half of them) grain boundaries and dark dislocation
clouds, thin dark lines and patches that are not defects; a sixth of the `ok` cells carry a
faint short scratch too (an inspection set's borderline "functional" cells). A `defective` cell has
one crack (a dark, 1–3 px wide, wandering line of 60–220 px, sometimes branched) and, for a third
of them, the part of the cell it cuts off is darkened (an inactive area); the crack's bounding box
is its row in `boxes.csv`. Generated, not real: it tells whether a network at 128 px can find
thin defects among look-alikes, not what a real set scores.

In a fresh copy of the project the train and evaluate stages run with the defaults of
`params.yaml` except the data section (and a variant). Writes `bench/results/cell_cracks.json`;
prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import cKDTree

from bench import RESULTS, names_of, seed_list
from bench.default_run import run
from bench.quality.neon_crowns import localisation_cells, measure, project_with, with_changes

SIDE, CELLS, DEFECTIVE_SHARE, TEST_SHARE = 300, 2600, 0.31, 0.25
VARIANTS = {
    "seed_cnn": {"model": {"backbone": "auto"}},  # the defaults: the small CNN from scratch
    "efficientnet-stride-16": {"model": {"pretrained": True}},  # EfficientNet-Lite0 from ImageNet, 8×8 map
    "seed_cnn-64": {"data": {"image_size": 64}},  # the defaults at a coarser resolution (the README's example size)
    "seed_cnn-96": {"data": {"image_size": 96}},
    "seed_cnn-224": {"data": {"image_size": 224}},  # the defaults at a finer resolution
    "heads-4": {"model": {"attention_heads": 4}},  # the defaults with four attention maps
    # the rate of the rule before 2026-12-05: batch 32 of 256 scaled the rate by (1/8) ** 0.5, now (1/8) ** 0.75
    "sqrt-rate": {"train": {"lr": 0.004 * 8**0.25}},
}


def smooth_noise(rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Gaussian noise blurred by `sigma` px, scaled to unit standard deviation."""
    field = ndimage.gaussian_filter(rng.normal(size=(SIDE, SIDE)), sigma)
    return field / field.std()


def grains(rng: np.random.Generator) -> np.ndarray:
    """A multicrystalline texture: Voronoi grains of their own brightness, darker boundaries between
    them, and dark dislocation clouds; an additive field around 0."""
    seeds = rng.uniform(0, SIDE, size=(int(rng.integers(40, 160)), 2))
    yy, xx = np.mgrid[:SIDE, :SIDE]
    _, grain = cKDTree(seeds).query(np.stack([yy.ravel(), xx.ravel()], 1))
    grain = grain.reshape(SIDE, SIDE)
    field = rng.normal(0, 0.05, len(seeds))[grain]
    boundary = (np.diff(grain, axis=0, prepend=grain[:1]) != 0) | (np.diff(grain, axis=1, prepend=grain[:, :1]) != 0)
    field -= rng.uniform(0.04, 0.14) * ndimage.gaussian_filter(boundary.astype(float), 0.7) * 2
    clouds = smooth_noise(rng, rng.uniform(6, 14))
    field -= rng.uniform(0.1, 0.3) * np.clip(clouds - rng.uniform(1.0, 2.0), 0, None)
    return field


def wander(rng: np.random.Generator, length: float) -> list[tuple[float, float]]:
    """A crack's path: a random walk of `length` px with a slowly turning heading."""
    y, x = rng.uniform(30, SIDE - 30, 2)
    heading, points = rng.uniform(0, 2 * np.pi), [(x, y)]
    for _ in range(int(length / 4)):
        heading += rng.normal(0, 0.25)
        x, y = x + 4 * np.cos(heading), y + 4 * np.sin(heading)
        if not (2 <= x < SIDE - 2 and 2 <= y < SIDE - 2):
            break
        points.append((x, y))
    return points


def crack(rng: np.random.Generator, length: float, width: int) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """A crack's mask (0..1, softened) and its path; a third of them branch once."""
    mask = Image.new("L", (SIDE, SIDE))
    draw = ImageDraw.Draw(mask)
    path = wander(rng, length)
    draw.line(path, fill=255, width=width)
    if rng.random() < 1 / 3 and len(path) > 4:
        start = path[int(rng.integers(1, len(path) - 1))]
        branch = [(start[0] + p[0] - path[0][0], start[1] + p[1] - path[0][1]) for p in wander(rng, length / 2)]
        inside = [p for p in branch if 0 <= p[0] < SIDE and 0 <= p[1] < SIDE]
        draw.line(inside, fill=255, width=max(1, width - 1))
        path = path + inside
    return ndimage.gaussian_filter(np.asarray(mask, float) / 255, 0.6), path


def box_around(path: list[tuple[float, float]]) -> tuple[int, int, int, int]:
    """The box (x_min, y_min, x_max, y_max) around a crack's points, 4 px wider, inside the cell."""
    xs, ys = np.array(path).T
    x_min, y_min, x_max, y_max = int(xs.min()) - 4, int(ys.min()) - 4, int(xs.max()) + 5, int(ys.max()) + 5
    return max(0, x_min), max(0, y_min), min(SIDE, x_max), min(SIDE, y_max)


def cell(
    rng: np.random.Generator, defective: bool, bits: int = 8, faint: bool = False
) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:  # fmt: skip
    """One 300×300 grey cell (uint8; uint16 holding 0..2**bits - 1 above 8 bits, as a 12-bit camera
    stores it) and, when `defective`, its crack's box (x_min, y_min, x_max, y_max). `faint`: the cell
    has one short faint crack, whatever its label (a borderline call an expert could make either way)."""
    image = 0.55 + rng.normal(0, 0.06) + 0.08 * smooth_noise(rng, 60)
    if rng.random() < 0.5:
        image += grains(rng)
    else:  # monocrystalline: swirl rings and cut corners
        yy, xx = np.mgrid[:SIDE, :SIDE] - SIDE / 2
        image += rng.uniform(0.0, 0.05) * np.sin(np.hypot(yy, xx) / rng.uniform(6, 12))
        cut = rng.uniform(25, 45)
        image[(np.abs(yy) + np.abs(xx)) > SIDE - cut] = 0.05
    image -= rng.uniform(0.02, 0.05) * (np.arange(SIDE) % int(rng.integers(5, 8)) == 0)[:, None]  # fingers
    for centre in np.linspace(0, SIDE, int(rng.integers(2, 5)) + 2)[1:-1]:  # busbars
        half = rng.uniform(2, 4)
        image[:, int(centre - half) : int(centre + half)] = 0.75 + rng.normal(0, 0.03)
    box = None
    if faint:
        mask, path = crack(rng, rng.uniform(25, 80), 1)
        image -= rng.uniform(0.15, 0.3) * mask
        box = box_around(path) if defective else None
    elif defective:
        mask, path = crack(rng, rng.uniform(60, 220), int(rng.integers(1, 4)))
        image -= rng.uniform(0.3, 0.55) * mask
        if rng.random() < 1 / 3:  # the part it cuts off goes dark
            xs, ys = np.array(path).T
            rows, columns = np.mgrid[:SIDE, :SIDE]
            side = columns < xs.mean() if np.ptp(ys) > np.ptp(xs) else rows < ys.mean()
            region = ndimage.binary_dilation(mask > 0.2, iterations=30) & side
            image -= rng.uniform(0.15, 0.35) * ndimage.gaussian_filter(region.astype(float), 2)
            xs, ys = np.nonzero(region)[1], np.nonzero(region)[0]
            path = path + list(zip(xs.tolist(), ys.tolist(), strict=True))
        box = box_around(path)
    elif rng.random() < 1 / 6:  # a faint short scratch on a good cell
        image -= rng.uniform(0.05, 0.1) * crack(rng, rng.uniform(15, 40), 1)[0]
    image += rng.normal(0, rng.uniform(0.015, 0.04), image.shape)
    image = ndimage.gaussian_filter(image, rng.uniform(0.4, 0.9))
    return (np.clip(image, 0, 1) * (2**bits - 1)).astype(np.uint8 if bits == 8 else np.uint16), box


def clear_label(rng: np.random.Generator) -> tuple[bool, bool]:
    """A cell's label drawn as this set draws it: `defective` with its share, never borderline."""
    return rng.random() < DEFECTIVE_SHARE, False


def build(
    target: Path, seed: int = 0, cells: int = CELLS, bits: int = 8, draw=clear_label
) -> dict[str, dict[str, int]]:  # fmt: skip
    """Write `cells` images (`bits` per sample: 8, or 16-bit PNGs holding fewer) to
    `target/{train,test}/{ok,defective}/*.png` and their crack boxes to `target/boxes.csv`; images
    per split and class. `draw(rng)` gives each cell's (defective, faint) (`cell`); the faint ones'
    paths go to `target/borderline.txt` (for the tests, outside the class folders), when there are any."""
    rng = np.random.default_rng(seed)
    rows, borderline, counts = ["path,x_min,y_min,x_max,y_max"], [], {}
    for index in range(cells):
        defective, faint = draw(rng)
        split, label = "test" if rng.random() < TEST_SHARE else "train", "defective" if defective else "ok"
        pixels, box = cell(rng, defective, bits, faint)
        path = f"{split}/{label}/{index:04d}.png"
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(target / path)
        if box:
            rows.append(f"{path},{','.join(map(str, box))}")
        if faint:
            borderline.append(path)
        counts.setdefault(split, {}).setdefault(label, 0)
        counts[split][label] += 1
    (target / "boxes.csv").write_text("\n".join(rows) + "\n")
    if borderline:
        (target / "borderline.txt").write_text("".join(f"{path}\n" for path in borderline))
    return counts


def prepare(project: Path) -> tuple[Path, dict, dict]:
    """A fresh copy of this project at `project` with the cells built, validated and preprocessed at
    128 px, grayscale; its root, params and images per split and class."""
    return project_with(project, "cell-cracks", build, image_size=128, channels=1)


def deletion(run: dict, part: str) -> str:
    """A run's deletion AUCs in the attention's, Grad-CAM's and a random order, on the images `part` names."""
    return ", ".join(f"{run[f'deletion_auc_{order}{part}']:.3f}" for order in ("attention", "gradcam", "random"))


def markdown(output: dict) -> str:
    rows = [
        "| variant | seed | batch × epochs (steps) | test accuracy | balanced accuracy | recall defective / ok "
        "| peak on the crack: attention / Grad-CAM (centre) | mass on the crack: attention / Grad-CAM (area) "
        "| deletion AUC, all / called defective / called ok: attention, Grad-CAM, random | train |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in output["runs"]:
        rows.append(
            f"| {r['defaults']} | {r['seed']} | {r['batch_size']} × {r['epochs']} ({r['steps']}) "
            f"| {r['test_accuracy']:.1%} | {r['balanced_accuracy']:.1%} "
            f"| {r['recall_defective']:.1%} / {r['recall_ok']:.1%} "
            f"{localisation_cells(r)}"
            f"| {' / '.join(deletion(r, part) for part in ('', '_called_defective', '_called_ok'))} "
            f"| {r['train_seconds']:.0f} s |"
        )
    return "\n".join(rows)


def measure_variants(
    root: Path, params: dict, variants: dict, args: argparse.Namespace, output: dict, path: Path, extra=None
) -> None:
    """Train and evaluate each of `args.variants` (names of `variants`) with each of `args.seeds` in
    the prepared project at `root` (preprocessing again for another data section); each run's
    figures (and what `extra(root)` adds of the trained project) replace that variant and seed's in
    `output`, written to `path` as they come."""
    prepared = params["data"]
    for seed in args.seeds:
        for variant in args.variants:
            changed = with_changes(params, variants[variant])
            if changed["data"] != prepared:  # another resolution: preprocess again
                (root / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
                run(root, sys.executable, "-m", "pipeline.preprocess")
                prepared = changed["data"]
            figures = measure(root, changed, variant, seed) | (extra(root) if extra else {})
            output["runs"] = [r for r in output["runs"] if (r["defaults"], r["seed"]) != (variant, seed)] + [figures]
            print(json.dumps(figures), flush=True)
            path.write_text(json.dumps(output, indent=2) + "\n")
    output["runs"].sort(key=lambda r: (r["seed"], list(variants).index(r["defaults"])))
    path.write_text(json.dumps(output, indent=2) + "\n")


def variants_main(
    module: str, doc: str, workdir: str, default: str, variants: dict, prepare, markdown, extra=None
) -> None:
    """The command line of a bench that trains `variants` on the project `prepare` builds: each
    variant and seed asked for measured (with `extra`, see `measure_variants`) into
    `bench/results/<name>.json`, then its table printed."""
    name = module.rsplit(".", 1)[-1]
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / workdir)
    parser.add_argument("--seeds", type=seed_list, default="0", help="the train.seed values, comma-separated")
    parser.add_argument("--variants", type=names_of(variants), default=default, help=f"of {', '.join(variants)}")
    args = parser.parse_args()
    path = RESULTS / f"{name}.json"
    output: dict = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    root, params, output["images"] = prepare(args.workdir / "project")
    measure_variants(root, params, variants, args, output, path, extra)
    print(markdown(output))


def main() -> None:
    variants_main("bench.quality.cell_cracks", __doc__, "attention-pipeline-cells", "seed_cnn,efficientnet-stride-16",
                  VARIANTS, prepare, markdown)  # fmt: skip


if __name__ == "__main__":
    main()
