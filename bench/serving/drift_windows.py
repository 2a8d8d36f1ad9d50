"""Monitoring on the reference model: no drift over windows like its training images, drift within
one window of a switched stream.

    PYTHONPATH=. python -m bench.serving.drift_windows [--root .] [--window 1000]
                                                       [--out bench/results/drift_windows.json]

The model file of the project's last run answers, as the server would log them: the monitoring
reference (`pipeline.monitor.reference_images`: validation and test images), five windows of the
test images outside it (an unchanged stream), and one window of
images it was not trained for (the switched stream: equal parts of the photographs, textures, faces
and digits of `pipeline/data/outliers.py`). Each window is judged by the monitoring run's own rule
(`pipeline.monitor.judge`: Evidently's report, the unknown rate, `monitoring:` in params.yaml).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench import RESULTS
from pipeline.core.config import load_config
from pipeline.data.outliers import outlier_set
from pipeline.data.splits import load_split
from pipeline.model.model_file import load_model
from pipeline.monitor import Verdict, judge, reference_images
from pipeline.monitoring import image_quality
from pipeline.monitoring.prediction_log import answer_records
from pipeline.training.runtime import predict_batches, select_runtime


def records(model, info, images: torch.Tensor) -> pd.DataFrame:
    """`images` answered by the model as the prediction log records them."""
    out = predict_batches(model, images, 1024, select_runtime("cpu", "fp32"))
    probabilities = out.logits.softmax(1).numpy()
    answer = {
        "class": [info.classes[i] for i in info.rule.classes(probabilities, info.classes)],
        "probabilities": probabilities, "novelty": out.novelty.numpy(),
        "unknown": info.detector.unknown(out.novelty.numpy()), "embedding": out.embedding.numpy(),
        **image_quality.measure(images),
    }  # fmt: skip
    return pd.DataFrame(answer_records(answer, info.classes, [""] * len(images)))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serving.drift_windows", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd())
    parser.add_argument("--window", type=int, default=1000, help="answers per window")
    parser.add_argument("--out", type=Path, default=RESULTS / "drift_windows.json")
    args = parser.parse_args()
    cfg = load_config(args.root.resolve() / "params.yaml")
    model, info = load_model(cfg.paths.model_file)
    held = reference_images(cfg)
    reference = records(model, info, held)
    test = load_split(cfg.paths.processed, "test").images
    in_reference = {bytes(image.numpy()) for image in held}
    test = test[torch.tensor([bytes(image.numpy()) not in in_reference for image in test])]  # not in the reference
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))
    windows = {f"unchanged {i + 1}": test[order[i * args.window : (i + 1) * args.window]] for i in range(5)}
    quarter = args.window // 4
    switched = [outlier_set(name, info.image_size, info.channels, quarter, seed=7) for name in ("photos", "textures")]
    switched += [outlier_set(name, info.image_size, info.channels, quarter, seed=7) for name in ("faces", "digits")]
    windows["switched"] = torch.from_numpy(np.concatenate(switched))
    results = {}
    for name, images in windows.items():
        verdict = Verdict("no verdict", [], "reference", None, "", "", len(images))
        started = time.perf_counter()
        judge(cfg, verdict, records(model, info, images), reference)
        results[name] = {
            "verdict": verdict.verdict, "reasons": verdict.reasons, "records": len(images),
            "unknown_rate": verdict.unknown_rate, "seconds": round(time.perf_counter() - started, 1),
            **{k: v for k, v in verdict.figures.items() if k != "drifted"}, "drifted": verdict.figures["drifted"],
        }  # fmt: skip
        print(f"{name:12} {verdict.line()}")
    report = {"reference_records": len(reference), "window": args.window, "settings": cfg.monitoring.model_dump(),
              "windows": results}  # fmt: skip
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
