"""Monitoring an inspection model: do the monitoring rules flag what goes wrong on a production
line, and stay quiet when nothing does?

    python -m bench.serving.inspection_drift [--workdir DIR] [--window 500] [--seed 0]

The model is the defaults' on the generated solar cells of `bench.quality.cell_cracks` (2,600
grey 300×300 cells, 31 % defective, trained at 128 px). It then answers, as the server decodes
PNG files (`pipeline.data.images.load_image`), windows of new cells from the same generator
(another seed), each window once as it comes and once under a change an inspection line meets:
- the camera: exposure 30 % lower or higher, out of focus (a Gaussian blur of σ 2 px), more
  sensor noise (σ 12 of 255 levels), turned 90°;
- the line: twice the share of defective cells (62 % instead of 31 %);
- a drift that creeps in: 10 %, 25 % and 50 % of the window at the lower exposure.

Each window is judged by the monitoring run's own rule (`pipeline.monitor.judge`, the defaults of
`monitoring:`, the validation and test images as reference) and scored against its labels, so that a window
whose answers got worse while the monitor calls it ok shows; each window's embeddings are also
scored under five splits, by the monitor's domain classifier and by Evidently's (`split_spread`).
Writes `bench/results/inspection_drift.json`; prints markdown tables.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from scipy import ndimage

from bench import RESULTS
from bench.quality import cell_cracks
from bench.quality.neon_crowns import measure
from bench.serving.drift_windows import records
from pipeline.core.config import load_config
from pipeline.data.images import load_image
from pipeline.model.model_file import load_model
from pipeline.monitor import Verdict, judge, reference_images
from pipeline.monitoring.embedding_drift import out_of_fold_auc
from pipeline.monitoring.image_quality import QUALITY

Change = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def exposure(gain: float) -> Change:
    return lambda pixels, rng: np.clip(pixels * gain, 0, 255)


def blur(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return ndimage.gaussian_filter(pixels, 2)


def noise(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(pixels + rng.normal(0, 12, pixels.shape), 0, 255)


def turned(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.rot90(pixels)


CHANGES: dict[str, Change] = {
    "exposure -30 %": exposure(0.7),
    "exposure +30 %": exposure(1.3),
    "out of focus": blur,
    "sensor noise": noise,
    "camera turned 90°": turned,
}
CREEPING = (0.10, 0.25, 0.50)  # shares of a window at the lower exposure


def new_cells(count: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """`count` new cells of the training set's generator (its defective share) with `seed`, and
    their labels (1: defective)."""
    rng = np.random.default_rng(seed)
    labels = rng.random(count) < cell_cracks.DEFECTIVE_SHARE
    return [cell_cracks.cell(rng, bool(label))[0] for label in labels], labels.astype(int)


def as_served(pixels: list[np.ndarray], size: int, bits: int) -> np.ndarray:
    """Images as the server turns the PNG files it is sent into the model's input."""
    inputs = []
    for image in pixels:
        file = io.BytesIO()
        Image.fromarray(np.asarray(image).round().astype(np.uint8)).save(file, format="PNG")
        inputs.append(load_image(file.getvalue(), size, 1, bits=bits))
    return np.stack(inputs)


def windows(cells: list[np.ndarray], labels: np.ndarray, seed: int) -> dict[str, tuple[list, np.ndarray]]:
    """The windows of a stream: three unchanged (disjoint), each camera change and each share of the
    creeping one on the first, and the line change drawn from all the cells."""
    rng = np.random.default_rng(seed)
    thirds = np.array_split(np.arange(len(cells)), 3)
    out = {f"unchanged {i + 1}": ([cells[j] for j in part], labels[part]) for i, part in enumerate(thirds)}
    first, first_labels = out["unchanged 1"]
    for name, change in CHANGES.items():
        out[name] = ([change(image.astype(float), rng) for image in first], first_labels)
    for share in CREEPING:
        darker = set(rng.permutation(len(first))[: round(share * len(first))].tolist())
        mixed = [CHANGES["exposure -30 %"](image.astype(float), rng) if i in darker else image
                 for i, image in enumerate(first)]  # fmt: skip
        out[f"{share:.0%} at exposure -30 %"] = (mixed, first_labels)
    defective, ok = np.nonzero(labels == 1)[0], np.nonzero(labels == 0)[0]
    count = round(0.62 * len(first))
    chosen = np.r_[rng.permutation(defective)[:count], rng.permutation(ok)[: len(first) - count]]
    out["twice the defective share"] = ([cells[j] for j in chosen], labels[chosen])
    return out


def score(answered: list[str], labels: np.ndarray, classes: list[str]) -> dict:
    """Accuracy and each class's recall of the answered classes."""
    truth = np.array([classes.index("defective") if label else classes.index("ok") for label in labels])
    right = np.array([a == classes[t] for a, t in zip(answered, truth, strict=True)])
    return {
        "accuracy": float(right.mean()),
        "recall_defective": float(right[labels == 1].mean()),
        "recall_ok": float(right[labels == 0].mean()),
        "defective_share": float(labels.mean()),
    }


def split_spread(reference: pd.DataFrame, window: pd.DataFrame, draws: int = 5) -> dict:
    """The embeddings' domain-classifier AUC of one window under `draws` different splits: the
    monitor's (`out_of_fold_auc`, fold seeds) and Evidently's model method (one SGD model fitted on
    half of the answers, scored on the other half; Evidently fixes the split's seed at 42)."""
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    ours, theirs = (np.stack(frame["embedding"].to_numpy()) for frame in (reference, window))
    rows, side = np.concatenate([ours, theirs]), np.r_[np.ones(len(ours)), np.zeros(len(theirs))]
    evidently = []
    for seed in range(draws):
        fit, held, fit_side, held_side = train_test_split(rows, side, test_size=0.5, random_state=seed)
        model = SGDClassifier(loss="log_loss", random_state=seed).fit(fit, fit_side)
        evidently.append(float(roc_auc_score(held_side, model.predict_proba(held)[:, 1])))
    return {
        "embedding_auc_folds": [out_of_fold_auc(ours, theirs, seed=seed) for seed in range(draws)],
        "embedding_auc_evidently_splits": evidently,
    }


def markdown(output: dict) -> str:
    rows = [
        "| window | verdict (what moved) | accuracy | recall defective / ok | answered defective | unknown rate "
        "| embedding drift (ROC AUC) | class distance (JS) | novelty distance "
        "| brightness / contrast / sharpness distance |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, w in output["windows"].items():
        moved = [column for column in w["drifted"] if column != "probability"]
        if w["unknown_rate"] > output["settings"]["max_unknown_rate"]:
            moved.insert(0, "unknown")
        verdict = f"{w['verdict']} ({', '.join(moved)})" if moved else w["verdict"]
        quality = " / ".join(f"{w[column + '_distance']:.2f}" for column in QUALITY)
        rows.append(
            f"| {name} | {verdict} | {w['accuracy']:.1%} | {w['recall_defective']:.1%} / {w['recall_ok']:.1%} "
            f"| {w['answered_defective']:.1%} | {w['unknown_rate']:.1%} | {w['embedding_auc']:.3f} "
            f"| {w['class_distance']:.3f} | {w['novelty_distance']:.3f} | {quality} |"
        )
    rows += [
        "",
        "| window | domain-classifier ROC AUC over 5 splits: the monitor's (out of fold) | Evidently's (one split) |",
        "|---|---|---|",
    ]
    for name, w in output["windows"].items():
        spread = [f"{np.mean(w[key]):.3f} ± {np.std(w[key]):.3f} ({min(w[key]):.3f}–{max(w[key]):.3f})"
                  for key in ("embedding_auc_folds", "embedding_auc_evidently_splits")]  # fmt: skip
        rows.append(f"| {name} | {spread[0]} | {spread[1]} |")
    return "\n".join(rows)


def main() -> None:
    module = "bench.serving.inspection_drift"
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "attention-pipeline-drift")
    parser.add_argument("--window", type=int, default=500, help="answers per window")
    parser.add_argument("--seed", type=int, default=0, help="train.seed of the model")
    parser.add_argument("--out", type=Path, default=RESULTS / "inspection_drift.json")
    args = parser.parse_args()
    project = args.workdir / "project"
    if (project / "models" / "model.pt").is_file():  # trained by an earlier call with this workdir
        root, figures = project, json.loads((args.workdir / "trained.json").read_text())
    else:
        root, params, _ = cell_cracks.prepare(project)
        figures = measure(root, params, "seed_cnn", args.seed)
        (args.workdir / "trained.json").write_text(json.dumps(figures))
    cfg = load_config(root / "params.yaml")
    model, info = load_model(cfg.paths.model_file)
    reference = records(model, info, reference_images(cfg))
    cells, labels = new_cells(3 * args.window, seed=1000 + args.seed)
    results = {}
    for name, (pixels, truth) in windows(cells, labels, args.seed).items():
        answered = records(model, info, torch.from_numpy(as_served(pixels, info.image_size, info.bit_depth)))
        verdict = Verdict("no verdict", [], "reference", None, "", "", len(answered))
        judge(cfg, verdict, answered, reference)
        results[name] = {
            "verdict": verdict.verdict, "reasons": verdict.reasons, "unknown_rate": verdict.unknown_rate,
            "answered_defective": float((answered["class"] == "defective").mean()),
            **score(list(answered["class"]), truth, list(info.classes)),
            **{k: v for k, v in verdict.figures.items() if k != "drifted"}, "drifted": verdict.figures["drifted"],
            **split_spread(reference, answered),
        }  # fmt: skip
        print(f"{name:28} {verdict.line()}  accuracy {results[name]['accuracy']:.1%}", flush=True)
    output = {"model": figures, "reference_records": len(reference), "window": args.window,
              "settings": cfg.monitoring.model_dump(), "windows": results}  # fmt: skip
    args.out.write_text(json.dumps(output, indent=1) + "\n")
    print(markdown(output))


if __name__ == "__main__":
    main()
