"""Saying "I don't know": the shipped detector beside the alternatives, on the project's trained model.

    PYTHONPATH=. python -m bench.quality.unknown_detectors [--root .] [--held-out Shirt]
                                                           [--out bench/results/unknown_detectors.json]

1. Far sets: `models/model.pt` on the test split against each set of `pipeline/data/outliers.py`.
   AUROC, FPR95 and the share flagged where 95 % of the validation images are accepted, for the
   maximum softmax probability, energy, Mahalanobis distance (class means, shared covariance) and
   the nearest-neighbour score at several bank sizes and k (the shipped one: the model's own), on
   the mean features (the last feature map averaged) and on the attention-pooled vector v.
2. Near set (`--held-out CLASS`): the train stage, run in a temporary project on the same
   preprocessed splits without that class; that class's test images are the outliers.
3. Cost: test-split images/s and single-image latency with and without the detector.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from bench import RESULTS
from pipeline.core.config import load_config
from pipeline.data.outliers import SETS, outlier_set
from pipeline.data.splits import TensorSplit, load_split, save_split
from pipeline.evaluate import separation
from pipeline.model.model_file import load_model
from pipeline.model.novelty import bank_rows, logit_scores, unit_rows
from pipeline.training.runtime import mean_features, predict_batches, select_runtime

BANKS, NEIGHBOURS = (1000, 5000, 20000, None), (1, 5, 10, 50)


def knn_of(bank: torch.Tensor, k: int, vectors: torch.Tensor) -> np.ndarray:
    similarity = unit_rows(vectors) @ unit_rows(bank).T
    return (1 - similarity.topk(k, dim=1).values[:, -1]).numpy()


def mahalanobis(train: torch.Tensor, labels: torch.Tensor):
    means = torch.stack([train[labels == c].mean(0) for c in labels.unique()])
    centred = train - means[labels]
    precision = torch.linalg.pinv(centred.T @ centred / len(train))

    def score(features: torch.Tensor) -> np.ndarray:
        offsets = features[:, None, :] - means[None]
        return torch.einsum("nkc,cd,nkd->nk", offsets, precision, offsets).min(1).values.numpy()

    return score


def row(known: np.ndarray, val: np.ndarray, outliers: dict[str, np.ndarray]) -> dict:
    threshold = np.quantile(val, 0.95)
    sets = {name: {**separation(known, scores), "flagged": float((scores > threshold).mean())}
            for name, scores in outliers.items()}  # fmt: skip
    return {"test_flagged": float((known > threshold).mean()), "auroc_min": min(s["auroc"] for s in sets.values()),
            "sets": sets}  # fmt: skip


def far_sets(root: Path) -> tuple[dict, dict]:
    cfg = load_config(root / "params.yaml")
    model, info = load_model(cfg.paths.model_file)
    runtime = select_runtime("cpu", "fp32")
    splits = {name: load_split(cfg.paths.processed, name) for name in ("train", "val", "test")}
    images = {name: split.images for name, split in splits.items()}
    for name in SETS:
        images[name] = torch.from_numpy(outlier_set(name, info.image_size, info.channels, seed=cfg.data.seed))
    out = {name: predict_batches(model, pixels, 1024, runtime) for name, pixels in images.items()}
    means = {name: mean_features(model, pixels, 1024, runtime) for name, pixels in images.items()}
    distance = mahalanobis(out["train"].embedding, splits["train"].labels)
    detectors = {  # each scores a set by name
        "max_softmax": lambda o: logit_scores(out[o].logits)["max_softmax"],
        "energy": lambda o: logit_scores(out[o].logits)["energy"],
        "mahalanobis": lambda o: distance(out[o].embedding),
        "shipped": lambda o: out[o].novelty.numpy(),
    }
    generator = torch.Generator().manual_seed(0)
    for size in BANKS:
        rows = torch.randperm(len(splits["train"].labels), generator=generator)[:size]
        for k in NEIGHBOURS:
            knn = functools.partial(knn_of, means["train"][rows], k)
            detectors[f"knn_bank{size or 'all'}_k{k}"] = lambda o, knn=knn: knn(means[o])
    shipped_rows = bank_rows(len(splits["train"].labels), cfg.train.unknown.bank, cfg.train.seed)
    pooled = functools.partial(knn_of, out["train"].embedding[shipped_rows], cfg.train.unknown.neighbours)
    detectors["knn_pooled_shipped_bank"] = lambda o: pooled(out[o].embedding)  # the detector before 2026-12-02
    results = {}
    for name, detector in detectors.items():
        results[name] = row(detector("test"), detector("val"), {s: detector(s) for s in SETS})
    return results, {"model": info.detector.describe(), "test": len(splits["test"].labels)}


def cost(root: Path) -> dict:
    cfg = load_config(root / "params.yaml")
    model, _ = load_model(cfg.paths.model_file)
    test = load_split(cfg.paths.processed, "test").images
    runtime = select_runtime(cfg.train.device, cfg.train.precision)
    detector, figures = model.novelty, {}
    for label, attached in (("without", None), ("with", detector)):
        model.novelty = attached
        predict_batches(model, test[:1024], 512, runtime)
        rates = []
        for _ in range(3):
            start = time.perf_counter()
            predict_batches(model, test, 512, runtime)
            rates.append(len(test) / (time.perf_counter() - start))
        latencies = []
        for index in range(200):
            start = time.perf_counter()
            predict_batches(model, test[index : index + 1], 1, runtime)
            latencies.append(1000 * (time.perf_counter() - start))
        figures[label] = {
            "images_per_second": round(max(rates)),
            "single_image_ms": round(statistics.median(latencies), 3),
        }
    figures["throughput_cost"] = 1 - figures["with"]["images_per_second"] / figures["without"]["images_per_second"]
    figures["latency_cost"] = figures["with"]["single_image_ms"] / figures["without"]["single_image_ms"] - 1
    return figures


def near_set(root: Path, held_out: str) -> dict:
    """Train in a temporary project on the splits without `held_out`; its test images are the outliers."""
    from pipeline import train

    cfg = load_config(root / "params.yaml")
    meta = json.loads((cfg.paths.processed / "meta.json").read_text())
    gone = meta["classes"].index(held_out)
    work = Path(tempfile.mkdtemp(prefix="bench-unknown-"))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["path"] = str(cfg.source_path())  # the same data version, named from the copy
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    processed = work / "data" / "processed"
    processed.mkdir(parents=True)
    shutil.copy(cfg.paths.manifest, work / "data" / "manifest.csv")
    outliers = None
    for name in ("train", "val", "test"):
        split = load_split(cfg.paths.processed, name)
        keep = split.labels != gone
        if name == "test":
            outliers = split.images[~keep]
        labels = split.labels[keep]
        save_split(processed / name, TensorSplit(split.images[keep], labels - (labels > gone).long()))
    json.dump({**meta, "classes": [c for c in meta["classes"] if c != held_out]}, (processed / "meta.json").open("w"))
    os.environ["PIPELINE_ROOT"] = str(work)
    started = time.perf_counter()
    trained = train.run(load_config(work / "params.yaml"))
    seconds = time.perf_counter() - started
    model, info = load_model(work / "models" / "model.pt")
    runtime = select_runtime("cpu", "fp32")
    known = predict_batches(model, load_split(processed, "test").images, 1024, runtime)
    unknown = predict_batches(model, outliers, 1024, runtime)
    result = {"held_out": held_out, "val_accuracy": trained.metrics["val_accuracy"], "train_seconds": round(seconds)}
    result["shipped"] = separation(known.novelty.numpy(), unknown.novelty.numpy())
    for key in ("max_softmax", "energy"):
        result[key] = separation(logit_scores(known.logits)[key], logit_scores(unknown.logits)[key])
    result["flagged"] = float(info.detector.unknown(unknown.novelty.numpy()).mean())
    result["test_flagged"] = float(info.detector.unknown(known.novelty.numpy()).mean())
    shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.quality.unknown_detectors", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--root", type=Path, default=Path.cwd())
    parser.add_argument("--held-out", help="a class to hold out for the near set (trains a model: minutes)")
    parser.add_argument("--out", type=Path, default=RESULTS / "unknown_detectors.json")
    args = parser.parse_args()
    root = args.root.resolve()
    detectors, about = far_sets(root)
    report = {"about": about, "cost": cost(root), "detectors": detectors}
    if args.held_out:
        report["near"] = near_set(root, args.held_out)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    for name, figures in detectors.items():
        aurocs = " ".join(f"{s['auroc']:.3f}" for s in figures["sets"].values())
        flagged = " ".join(f"{s['flagged']:.2f}" for s in figures["sets"].values())
        print(f"{name:22} AUROC {aurocs}  flagged {flagged}  test {figures['test_flagged']:.3f}")
    print(json.dumps({k: report[k] for k in report if k != "detectors"}, indent=1))


if __name__ == "__main__":
    main()
