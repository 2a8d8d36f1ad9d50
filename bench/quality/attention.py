"""Soft attention against average pooling on cluttered Fashion-MNIST: the same budget, several seeds.

    python -m bench.quality.attention [--train 12000] [--test 2000] [--epochs 8] [--seeds 3] [--workdir DIR]

The first `--train` and `--test` Fashion-MNIST images, cluttered (`data.source:
cluttered-fashion-mnist`, 60×60 canvases with 4 fragments, each item's box known), are validated
and preprocessed once by the project's stages in a fresh copy of the project; then, for each seed,
the train and evaluate stages run with `model.attention: soft` and `none` (global average pooling)
and everything else equal. Reports test accuracy (mean ± std over seeds), the pointing game of the
attention beside Grad-CAM's and a centre point's, the mass in the box (attention, Grad-CAM) beside
its chance level, and the deletion AUC in the attention's order beside Grad-CAM's and a random
order. Writes `bench/results/attention.json`; prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

from bench import RESULTS
from bench.default_run import copy_project, run
from pipeline.core.paths import project_root
from pipeline.data.fashion_mnist import write_subset

PROJECT = project_root()
SOURCE = PROJECT / "data" / "fashion-mnist"
ATTENTION = ("soft", "none")


def measure(root: Path, base: dict, attention: str, seed: int) -> dict:
    """Train and evaluate one variant with the project's stages; its figures."""
    params = yaml.safe_load(yaml.safe_dump(base))
    params["model"]["attention"] = attention
    params["train"]["seed"] = seed
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    seconds, _ = run(root, sys.executable, "-m", "pipeline.train")
    run(root, sys.executable, "-m", "pipeline.evaluate")
    evaluated = json.loads((root / "metrics" / "eval.json").read_text())
    checked = evaluated["attention"]
    return {
        "attention": attention, "seed": seed, "train_seconds": round(seconds, 1),
        "test_accuracy": evaluated["accuracy"], **checked["localisation"],
        **{f"deletion_auc_{order}": auc for order, auc in checked["deletion_auc"].items()},
        "near_empty_attention_mass": checked["near_empty_attention_mass"],
    }  # fmt: skip


def summary(runs: list[dict]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per attention kind, each figure's mean and standard deviation over the seeds."""
    figures = [key for key in runs[0] if key not in ("attention", "seed") and isinstance(runs[0][key], float)]
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for kind in dict.fromkeys(r["attention"] for r in runs):
        values = [r for r in runs if r["attention"] == kind]
        table[kind] = {
            key: (
                statistics.mean(r[key] for r in values),
                statistics.stdev(r[key] for r in values) if len(values) > 1 else 0.0,
            )
            for key in figures
        }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.quality.attention", description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=12000, help="Fashion-MNIST training images used")
    parser.add_argument("--test", type=int, default=2000, help="Fashion-MNIST test images used")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "attention-pipeline-bench")
    args = parser.parse_args()
    root = copy_project(PROJECT, args.workdir / "attention")
    write_subset(SOURCE, root / "data" / "fashion-subset", args.train, args.test)
    base = yaml.safe_load((root / "params.yaml").read_text())
    base["data"].update(source="cluttered-fashion-mnist", path="data/fashion-subset", image_size=60, canvas=60)
    base["train"].update(epochs=args.epochs)
    (root / "params.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    run(root, sys.executable, "-m", "pipeline.validate")
    run(root, sys.executable, "-m", "pipeline.preprocess")
    runs = []
    for seed in range(args.seeds):
        for attention in ATTENTION:
            runs.append(measure(root, base, attention, seed))
            print(json.dumps(runs[-1]), flush=True)
    table = summary(runs)
    output = {"train_images": args.train, "test_images": args.test, "epochs": args.epochs, "seeds": args.seeds,
              "canvas": 60, "clutter": base["data"]["clutter"], "runs": runs, "summary": table}  # fmt: skip
    (RESULTS / "attention.json").write_text(json.dumps(output, indent=2) + "\n")
    print(markdown(output))


def markdown(output: dict) -> str:
    """The side-by-side table of `bench/results/attention.json`."""

    def cell(kind: str, key: str, percent: bool = True) -> str:
        mean, std = output["summary"][kind][key]
        return f"{100 * mean:.1f} ± {100 * std:.1f} %" if percent else f"{mean:.3f} ± {std:.3f}"

    rows = [
        "| pooling | test accuracy | pointing game: attention / Grad-CAM (centre) "
        "| mass in box: attention / Grad-CAM (chance) | deletion AUC: attention / Grad-CAM (random) order |",
        "|---|---|---|---|---|",
    ]
    for kind in output["summary"]:
        uniform = kind == "none"  # average pooling's map is uniform: its peak and order mean nothing
        rows.append(
            f"| {kind} | {cell(kind, 'test_accuracy')} "
            f"| {'uniform' if uniform else cell(kind, 'pointing_game')} / {cell(kind, 'gradcam_pointing_game')} "
            f"({cell(kind, 'pointing_game_centre_baseline')}) "
            f"| {cell(kind, 'box_attention_mass')} / {cell(kind, 'gradcam_box_mass')} ({cell(kind, 'box_area_share')}) "
            f"| {'uniform' if uniform else cell(kind, 'deletion_auc_attention', False)} "
            f"/ {cell(kind, 'deletion_auc_gradcam', False)} ({cell(kind, 'deletion_auc_random', False)}) |"
        )
    head = (
        f"Cluttered Fashion-MNIST (60×60, {output['clutter']} fragments), the first {output['train_images']:,} "
        f"training and {output['test_images']:,} test images, {output['epochs']} epochs, mean ± std over "
        f"{output['seeds']} seeds:"
    )
    return head + "\n\n" + "\n".join(rows)


if __name__ == "__main__":
    main()
