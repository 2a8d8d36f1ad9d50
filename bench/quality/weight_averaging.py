"""Averaging the weights: would an exponential moving average (EMA) of the weights over the last
part of the run answer better than the last step's weights? Tried on the borderline cells, not kept.

    python -m bench.quality.weight_averaging [--seeds 0] [--workdir DIR]

The cells of `bench.quality.cell_cracks_borderline` (generated solar cells, 31 % defective, 15 % of
them with labels people give either way), preprocessed as there. Per seed one training run, exactly
the train stage's steps at the defaults (`build_training`, `train_epoch`), with EMAs of every
weight and batch-norm statistic (torch's `AveragedModel`) updated after each optimizer step, their
windows a share of the run's steps (`SHARES`: decay 1 − 1 / (share × steps)). Each, and the last
weights, scored on the validation and test splits by the raw logits' argmax, the answer of the
model file with the defaults' balanced class weights: accuracy, balanced accuracy, recall of the
defective class, log loss. Writes `bench/results/weight_averaging.json`; prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from sklearn.metrics import balanced_accuracy_score, log_loss
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from bench import RESULTS, seed_list
from bench.quality.cell_cracks_borderline import prepare
from pipeline.core.config import load_config
from pipeline.data.splits import TensorSplit, load_split, read_meta
from pipeline.training.runtime import Runtime, predict_batches, select_runtime
from pipeline.training.steps import build_training, train_epoch

SHARES = (0.05, 0.1, 0.2, 0.35)  # each EMA's window, a share of the run's optimizer steps
DEFECTIVE = "defective"


def scores(model, splits: dict[str, TensorSplit], runtime: Runtime, defective: int) -> dict[str, float]:
    """Accuracy, balanced accuracy, defective recall and log loss of `model` on each split."""
    figures = {}
    for name, split in splits.items():
        logits = predict_batches(model, split.images, runtime.scoring_batch(split.images), runtime).logits
        truth, answer = split.labels.cpu().numpy(), logits.argmax(1).numpy()
        figures |= {
            f"{name}_accuracy": float((answer == truth).mean()),
            f"{name}_balanced_accuracy": float(balanced_accuracy_score(truth, answer)),
            f"{name}_recall_defective": float((answer[truth == defective] == defective).mean()),
            f"{name}_log_loss": float(log_loss(truth, logits.softmax(1).numpy(), labels=range(logits.shape[1]))),
        }
    return figures


def measure(root: Path, seed: int) -> list[dict]:
    """One training run at the defaults with `train.seed` `seed`: the last weights' figures and each EMA's."""
    cfg = load_config(root / "params.yaml", {"train.seed": seed})
    meta = read_meta(cfg.paths.processed)
    runtime = select_runtime(cfg.train.device, cfg.train.precision, 0, cfg.model.backbone)
    train = load_split(cfg.paths.processed, "train", "memory", runtime.device)
    splits = {name: load_split(cfg.paths.processed, name, "memory") for name in ("val", "test")}
    training = build_training(cfg, meta, runtime, train.labels)
    averages = {
        share: AveragedModel(
            training.model, multi_avg_fn=get_ema_multi_avg_fn(1 - 1 / (share * training.plan.steps)), use_buffers=True
        )
        for share in SHARES
    }  # fmt: skip
    training.optimizer.register_step_post_hook(
        lambda *_: [average.update_parameters(training.model) for average in averages.values()]
    )
    started = time.perf_counter()
    for epoch in range(1, training.plan.epochs + 1):
        train_epoch(training, train, cfg.train, runtime, epoch)
    seconds = round(time.perf_counter() - started, 1)
    defective = meta["classes"].index(DEFECTIVE)
    last = scores(training.model, splits, runtime, defective)
    runs = [{"seed": seed, "weights": "last", "train_seconds": seconds, **last}]
    for share, average in averages.items():
        runs.append({"seed": seed, "weights": f"ema-{share}", **scores(average.module, splits, runtime, defective)})
    return runs


def markdown(output: dict) -> str:
    """The runs as a table, one row per seed and weights."""
    lines = [
        "| seed | weights | test accuracy | balanced accuracy | recall defective | log loss | validation accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in output["runs"]:
        lines.append(
            f"| {run['seed']} | {run['weights']} | {run['test_accuracy']:.1%} | {run['test_balanced_accuracy']:.1%} "
            f"| {run['test_recall_defective']:.1%} | {run['test_log_loss']:.3f} | {run['val_accuracy']:.1%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.quality.weight_averaging", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "attention-pipeline-averaging")
    parser.add_argument("--seeds", type=seed_list, default="0", help="the train.seed values, comma-separated")
    args = parser.parse_args()
    path = RESULTS / "weight_averaging.json"
    output: dict = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    root, _, output["images"] = prepare(args.workdir / "project")
    for seed in args.seeds:
        output["runs"] = [run for run in output["runs"] if run["seed"] != seed] + measure(root, seed)
        output["runs"].sort(key=lambda run: (run["seed"], run["weights"] != "last", run["weights"]))
        path.write_text(json.dumps(output, indent=2) + "\n")
    print(markdown(output))


if __name__ == "__main__":
    main()
