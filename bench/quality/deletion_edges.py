"""Deleting without drawing edges: deletion curves through hard-edged and soft-edged cell masks.

    python -m bench.quality.deletion_edges PROJECT [PROJECT ...]

Each PROJECT is a copy of this project with a trained model (a quality bench's
`<workdir>/project`). On the test images of evaluate's deletion sample
(`evaluate.faithfulness_images`, seeded as evaluate draws them, with its fill) the cells are
deleted in the attention's, Grad-CAM's and a random order, once through hard-edged masks (each
cell's pixels replaced outright: this project's deletion before 2026-12-03) and once through soft
ones (the mask upsampled bilinearly: evaluate's now). Per predicted class: the area under each
mean curve, and for the random order the mean probability of the predicted class after the first
step (1/16 of the cells deleted). Writes `bench/results/deletion_edges.json` (a run per project's
data path and `train.seed`); prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from bench import RESULTS
from pipeline.core.config import load_config
from pipeline.data.splits import load_split
from pipeline.evaluate import deletion_fill, gradcam_batch, sample
from pipeline.model import attention_checks as checks
from pipeline.model.gradcam import gradcam_maps
from pipeline.model.model_file import load_model
from pipeline.training.runtime import predict_batches, select_runtime


def measure(project: Path) -> dict:
    """The deletion figures of `project`'s trained model, hard- and soft-edged, per predicted class."""
    os.environ["PIPELINE_ROOT"] = str(project)
    cfg = load_config()
    model, info = load_model(cfg.paths.model_file)
    test = load_split(cfg.paths.processed, "test", "memory")
    runtime = select_runtime(cfg.train.device, cfg.train.precision, backbone=cfg.model.backbone)
    model = runtime.prepare(model)
    chosen = sample(torch.arange(len(test.labels)), cfg.evaluate.faithfulness_images, cfg.data.seed)
    images = test.images[chosen]
    batch = runtime.scoring_batch(images, cfg.evaluate.batch_size)
    attention = predict_batches(model, images, batch, runtime).attention
    grid = tuple(attention.shape[1:])
    fill = deletion_fill(cfg, images, info)
    orders = {
        "attention": checks.map_order(attention),
        "gradcam": checks.map_order(gradcam_maps(model, images, grid, gradcam_batch(model, images, batch, runtime))),
        "random": checks.random_order(len(images), grid[0] * grid[1], cfg.data.seed),
    }

    def probabilities(batch_images: torch.Tensor) -> torch.Tensor:
        return predict_batches(model, batch_images, batch, runtime).logits.softmax(1)

    figures: dict = {"data": cfg.data.path, "seed": cfg.train.seed, "images": len(images)}
    figures["fill"] = cfg.evaluate.deletion_fill
    for edges, soft in (("hard", False), ("soft", True)):
        curves = {n: checks.deletion_curves(probabilities, images, o, grid, fill, soft) for n, o in orders.items()}
        predicted = curves["random"][1]
        for index, label in enumerate(info.classes):
            mine = predicted == index
            if not mine.any():
                continue
            figures[f"{edges}_{label}"] = {
                "images": int(mine.sum()),
                **{f"auc_{name}": checks.area(values[mine].mean(0)) for name, (values, _) in curves.items()},
                "random_first_step": float(curves["random"][0][mine, 1].mean()),
            }
    return figures


def markdown(output: dict) -> str:
    """The runs as a markdown table: per predicted class, hard then soft edges."""
    lines = [
        "| data | seed | called | images | random order, after 1/16 of the cells: hard / soft "
        "| deletion AUC, hard edges: attention / Grad-CAM / random | soft edges: attention / Grad-CAM / random |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in output["runs"]:
        for key in (k for k in run if k.startswith("hard_")):
            label = key.removeprefix("hard_")
            hard, soft = run[key], run[f"soft_{label}"]

            def aucs(part: dict) -> str:
                return " / ".join(f"{part[f'auc_{name}']:.3f}" for name in ("attention", "gradcam", "random"))

            lines.append(
                f"| {run['data']} | {run['seed']} | {label} | {hard['images']} "
                f"| {hard['random_first_step']:.2f} / {soft['random_first_step']:.2f} | {aucs(hard)} | {aucs(soft)} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.quality.deletion_edges", description=__doc__.splitlines()[0])
    parser.add_argument("projects", type=Path, nargs="+", help="copies of this project with a trained model")
    args = parser.parse_args()
    path = RESULTS / "deletion_edges.json"
    output: dict = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    for project in args.projects:
        figures = measure(project.resolve())
        same = (figures["data"], figures["seed"])
        output["runs"] = [r for r in output["runs"] if (r["data"], r["seed"]) != same] + [figures]
        path.write_text(json.dumps(output, indent=2) + "\n")
    print(markdown(output))


if __name__ == "__main__":
    main()
