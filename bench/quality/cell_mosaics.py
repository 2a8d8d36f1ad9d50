"""Which quarter holds the crack: 2×2 mosaics of generated solar cells, exactly one of them cracked.

    python -m bench.quality.cell_mosaics [--seeds 0] [--variants seed_cnn,steps-floor-only] [--workdir DIR]

The issue's localisation check, in the shape it ran on the held-back inspection images: 2×2
mosaics of grey cells, exactly one of them defective, its quarter given as the box, trained with
the defaults at `image_size: 128` (there: 67.8 % accuracy, the attention's peak in the defective
quarter for 54.5 % of defective mosaics, Grad-CAM 50.5 %; target ≥ 80 % and above Grad-CAM). The
cells are `bench.quality.cell_cracks`' (2,600 generated at 300 px, 31 % with a crack, split 75/25
by cell), so a 600-px mosaic shrinks each cell to 64 px and a 1–3 px crack to under a pixel. Per
split (`build`): `defective`, each cracked cell once in a random quarter beside three ok cells
drawn at random; `ok`, as many mosaics of four ok cells. In a fresh copy of the project the train
and evaluate stages run with the defaults of `params.yaml` except the data section and a variant:
`seed_cnn` (the defaults), `steps-floor-only` (the training length before `train.min_images`: half
the epochs here), `top-down` (the docs' advice for cells: `vflip`, `rot90`; also with the step floor
only, and with twice the images, `train.min_images: 64000`, as `twice-the-images` without it),
`seed_cnn-256` (the defaults at `image_size: 256`), `heads-4` (four attention maps) and `half-rate`
(the defaults at half the learning rate). Writes `bench/results/cell_mosaics.json`; prints a markdown table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.quality.cell_cracks import CELLS, DEFECTIVE_SHARE, TEST_SHARE, cell, variants_main
from bench.quality.neon_crowns import localisation_cells, project_with
from bench.quality.neon_mosaics import write_mosaics

VARIANTS = {
    "seed_cnn": {"model": {"backbone": "auto"}},  # the defaults
    "steps-floor-only": {"train": {"min_images": 0}},  # the training length before `train.min_images`
    "top-down-steps-floor-only": {"train": {"min_images": 0, "augment": {"vflip": True, "rot90": True}}},
    "top-down": {"train": {"augment": {"vflip": True, "rot90": True}}},  # the docs' advice for top-down images
    "twice-the-images": {"train": {"min_images": 64000}},  # the defaults, trained twice as long
    "top-down-twice-the-images": {"train": {"min_images": 64000, "augment": {"vflip": True, "rot90": True}}},
    "seed_cnn-256": {"data": {"image_size": 256}},  # the defaults at twice the resolution
    "heads-4": {"model": {"attention_heads": 4}},  # the defaults with four attention maps
    "half-rate": {"train": {"lr": 0.002}},  # the defaults at half the learning rate
}


def cells_by_split(rng: np.random.Generator, cells: int) -> dict[str, dict[bool, list[np.ndarray]]]:
    """`cells` generated cells, by split and by whether they are cracked (`bench.quality.cell_cracks`' shares)."""
    parts: dict[str, dict[bool, list[np.ndarray]]] = {"train": {True: [], False: []}, "test": {True: [], False: []}}
    for _ in range(cells):
        defective = rng.random() < DEFECTIVE_SHARE
        split = "test" if rng.random() < TEST_SHARE else "train"
        parts[split][defective].append(cell(rng, defective)[0])
    return parts


def build(target: Path, seed: int = 0, cells: int = CELLS) -> dict[str, dict[str, int]]:
    """Write `target/{train,test}/{defective,ok}/*.png` (2×2 mosaics of `cells` generated cells,
    each cell in one split) and `target/boxes.csv` (each defective mosaic's cracked quarter); the
    number of mosaics per split and class."""
    rng = np.random.default_rng(seed)
    rows, counts = ["path,x_min,y_min,x_max,y_max"], {}
    for split, found in cells_by_split(rng, cells).items():
        rows += write_mosaics(target, split, ("defective", "ok"), found[True], found[False], rng)
        counts[split] = {"defective": len(found[True]), "ok": len(found[True])}
    (target / "boxes.csv").write_text("\n".join(rows) + "\n")
    return counts


def prepare(project: Path) -> tuple[Path, dict, dict]:
    """A fresh copy of this project at `project` with the mosaics built, validated and preprocessed
    at 128 px, grayscale; its root, params and mosaics per split and class."""
    return project_with(project, "cell-mosaics", build, image_size=128, channels=1)


def markdown(output: dict) -> str:
    rows = [
        "| variant | seed | batch × epochs (steps) | test accuracy | recall defective / ok "
        "| peak in the cracked quarter: attention / Grad-CAM (centre) "
        "| mass in the quarter: attention / Grad-CAM (area) | deletion AUC: attention / Grad-CAM (random) | train |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in output["runs"]:
        rows.append(
            f"| {r['defaults']} | {r['seed']} | {r['batch_size']} × {r['epochs']} ({r['steps']}) "
            f"| {r['test_accuracy']:.1%} | {r['recall_defective']:.1%} / {r['recall_ok']:.1%} "
            f"{localisation_cells(r)}"
            f"| {r['deletion_auc_attention']:.3f} / {r['deletion_auc_gradcam']:.3f} ({r['deletion_auc_random']:.3f}) "
            f"| {r['train_seconds']:.0f} s |"
        )
    return "\n".join(rows)


def main() -> None:
    variants_main("bench.quality.cell_mosaics", __doc__, "attention-pipeline-cell-mosaics", "seed_cnn,steps-floor-only",
                  VARIANTS, prepare, markdown)  # fmt: skip


if __name__ == "__main__":
    main()
