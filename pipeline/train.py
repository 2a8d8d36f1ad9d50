"""Stage 3, train: the attention CNN on the preprocessed tensors, tracked in MLflow.

Reads `data/processed/`; writes `models/model.pt`, `metrics/train.json`, `metrics/history.csv`
and `plots/training_curves.png`. A checkpoint (`models/checkpoint.pt`, and the one before it) is
written after an epoch once `train.checkpoint_seconds` have passed since the last one: running the
stage again after an interruption, even a kill, resumes from the last good one, in the same MLflow
run, unless the settings or the code under `pipeline/` changed since. With `train.processes: N` (or
under torchrun) it trains data-parallel (`pipeline/training/distributed.py`); the steps themselves
are in `pipeline/training/steps.py`, their batch size and length in `pipeline/training/plan.py`. The
run names its training data as an MLflow dataset and records what changed in it since the champion's
(`pipeline/data/mlflow_dataset.py`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass

import mlflow
import pandas as pd
import torch

from pipeline.core import figures
from pipeline.core.config import Config, load_config
from pipeline.core.errors import run_cli
from pipeline.core.files import atomic_path, write_json
from pipeline.core.tracking import connect, key_part
from pipeline.core.versions import data_version, git_commit
from pipeline.data.mlflow_dataset import log_changes, log_training_data
from pipeline.data.split_rule import SPLIT_RULE
from pipeline.data.splits import TensorSplit, load_split, read_meta
from pipeline.model.aliases import current_champion
from pipeline.model.calibration import calibration_error, fit_temperature, prior_offset
from pipeline.model.decision import Decision, check_positive_class
from pipeline.model.model_file import ModelInfo, save_model
from pipeline.model.network import AttentionCNN
from pipeline.model.novelty import DETECTOR, bank_rows, unit_rows
from pipeline.model.threshold import choose_threshold
from pipeline.model.unknown import Novelty, acceptance_threshold
from pipeline.training.checkpoints import code_digest, remove_checkpoints, restore, resume, save_checkpoint
from pipeline.training.distributed import Ranks, launch, launched, process_group
from pipeline.training.runtime import (
    Runtime,
    mean_features,
    predict_batches,
    select_runtime,
    uses_cuda,
)
from pipeline.training.selection import KeptEpoch
from pipeline.training.steps import build_training, evaluate_split, peak_memory_mb, train_epoch

log = logging.getLogger(__name__)
FEW_VALIDATION_IMAGES = 50  # fewer: a temperature or a threshold fitted on them is mostly noise (say so)


def fingerprint(cfg: Config, meta: dict) -> str:
    """What a checkpoint must match to be resumed: the data, model and training settings and the code."""
    settings = {
        "code": code_digest(),
        "data": cfg.data.model_dump(),
        "model": cfg.model.model_dump(),
        "train": cfg.train.model_dump(exclude={"checkpoint_seconds"}),
        "meta": meta,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    history: pd.DataFrame
    metrics: dict


def run(cfg: Config) -> TrainResult | None:
    """Train (or resume) and write the model, metrics, history and curves; log everything to MLflow.

    Under torchrun every rank trains; rank 0 alone validates, logs, checkpoints and writes, and the
    others return None.
    """
    meta = read_meta(cfg.paths.processed)
    check_positive_class(cfg.data.positive_class, meta["classes"])
    with process_group(uses_cuda(cfg.train.device)) as ranks:
        return _train(cfg, meta, ranks)


def _train(cfg: Config, meta: dict, ranks: Ranks) -> TrainResult | None:
    paths = cfg.paths
    experiment_id = connect(cfg) if ranks.is_main else None  # fail fast, before any training
    runtime = select_runtime(cfg.train.device, cfg.train.precision, ranks.local_rank, cfg.model.backbone)
    train_data = load_split(paths.processed, "train", cfg.train.loader, runtime.device)  # held on the device
    val_data = load_split(paths.processed, "val", cfg.train.loader)
    if train_data.streamed:
        where = str(train_data.images.folder).removesuffix("/train")
        log.info("train: images streamed from the shards in %s (train.loader %s)", where, cfg.train.loader)
    else:
        train_data = TensorSplit(train_data.images.to(runtime.device), train_data.labels.to(runtime.device))

    training = build_training(cfg, meta, runtime, train_data.labels, ranks, val_data.labels)
    model, optimizer, schedule = training.model, training.optimizer, training.schedule

    expected = fingerprint(cfg, meta)
    # rank 0 reads the checkpoint and sends it: other nodes need not share its filesystem
    checkpoint = ranks.from_main(resume(paths.checkpoint, expected, training) if ranks.is_main else None)
    if checkpoint and not ranks.is_main:
        restore(checkpoint, training)
    history: list[dict] = []
    run_id, first_epoch = None, 1
    if checkpoint:
        history, run_id, first_epoch = checkpoint["history"], checkpoint["run_id"], checkpoint["epoch"] + 1
    kept = KeptEpoch(cfg.train.keep, checkpoint and checkpoint.get("kept"))
    if not ranks.is_main:
        for epoch in range(first_epoch, training.plan.epochs + 1):
            train_epoch(training, train_data, cfg.train, runtime, epoch, ranks=ranks)
        return None

    version = data_version(cfg)
    log.info(
        "train: %s × %d, %d train / %d val images, data %s; %s",
        runtime.name,
        ranks.world_size,
        len(train_data.labels),
        len(val_data.labels),
        version,
        training.plan.describe(),
    )
    for line in cfg.chosen:
        log.info("train: auto %s", line)
    if len(val_data.labels) < FEW_VALIDATION_IMAGES:
        log.warning(
            "train: the validation split holds only %d images (data.val_fraction %s): the calibration, the 'unknown' "
            "threshold and a positive class's threshold are fitted on them and may be off; raise data.val_fraction "
            "or add images", len(val_data.labels), cfg.data.val_fraction,
        )  # fmt: skip
    # MLflow would tag a new run with this machine's absolute path of the script
    source_tag = None if run_id else {"mlflow.source.name": "pipeline/train.py"}
    with mlflow.start_run(run_id=run_id, experiment_id=experiment_id, tags=source_tag) as active:
        if checkpoint is None:
            mlflow.log_params(cfg.as_flat_params())
            commit = git_commit(cfg.root)
            mlflow.log_params({
                "plan.batch_size": training.plan.batch_size, "plan.epochs": training.plan.epochs,
                "plan.steps": training.plan.steps,
            })  # fmt: skip
            mlflow.set_tags({
                "data_version": version, "git_commit": commit, "runtime": runtime.name, "split_rule": SPLIT_RULE,
                "plan": training.plan.describe(), "auto": "; ".join(cfg.chosen) or "none",
            })  # fmt: skip
            dataset = log_training_data(cfg, version, commit)
            champion = current_champion(mlflow.MlflowClient(), cfg.register.model_name)
            if champion is not None:
                log_changes(dataset.df, champion.run_id, f"champion version {champion.version}")
        last_checkpoint = time.monotonic()
        for epoch in range(first_epoch, training.plan.epochs + 1):
            lr = optimizer.param_groups[0]["lr"]
            row = {"epoch": epoch, **train_epoch(training, train_data, cfg.train, runtime, epoch, ranks=ranks)}
            started = time.perf_counter()
            row["val_loss"], row["val_accuracy"] = evaluate_split(training, val_data, runtime)
            row["val_seconds"] = time.perf_counter() - started
            row["lr"] = lr
            history.append(row)
            kept.update(epoch, row["val_loss"], model)
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
            timed = [r["seconds"] + r["val_seconds"] for r in history]  # a resumed run: its own epochs' too
            log.info(
                "epoch %d/%d  loss %.4f  acc %.4f  val_loss %.4f  val_acc %.4f  %.0f img/s%s",
                epoch, training.plan.epochs, row["train_loss"], row["train_accuracy"],
                row["val_loss"], row["val_accuracy"], row["images_per_second"], training.plan.time_left(epoch, timed),
            )  # fmt: skip
            if time.monotonic() - last_checkpoint >= cfg.train.checkpoint_seconds:
                save_checkpoint(paths.checkpoint, {
                    "fingerprint": expected, "epoch": epoch, "run_id": active.info.run_id, "history": history,
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                    "kept": kept.state(),
                })  # fmt: skip
                last_checkpoint = time.monotonic()

        frame = pd.DataFrame(history)
        kept_epoch = kept.restore(model, history[-1]["epoch"])
        if kept_epoch != history[-1]["epoch"]:
            log.info(
                "train: keeps epoch %d of %d, the lowest validation loss (%.4f; last epoch %.4f)",
                kept_epoch, len(history), kept.val_loss, history[-1]["val_loss"],
            )  # fmt: skip
        chosen = next(row for row in history if row["epoch"] == kept_epoch)
        metrics = {
            "epochs": len(history),
            "kept_epoch": kept_epoch,
            "batch_size": training.plan.batch_size,
            "steps": training.plan.steps,
            "train_loss": chosen["train_loss"],
            "train_accuracy": chosen["train_accuracy"],
            "val_loss": chosen["val_loss"],
            "val_accuracy": chosen["val_accuracy"],
            "images_per_second": float(frame["images_per_second"].median()),
            "train_seconds": round(float(frame["seconds"].sum()), 1),
            "validation_seconds": round(float(frame["val_seconds"].sum()), 1),
            "peak_memory_mb": round(peak_memory_mb(runtime)),
        }
        mlflow.log_metrics({"peak_memory_mb": metrics["peak_memory_mb"], "kept_epoch": kept_epoch})
        weights = None if training.class_weights is None else training.class_weights.float().cpu()  # None: balanced
        if weights is not None:
            metrics["class_weights"] = dict(zip(meta["classes"], weights.tolist(), strict=True))
            mlflow.log_params(
                {f"class_weight.{key_part(name)}": round(w, 4) for name, w in metrics["class_weights"].items()}
            )
        pull = weights if cfg.train.calibrate else None  # what calibration takes out and the answer puts back
        if cfg.train.calibrate:
            metrics["calibration"] = calibrate(model, val_data, runtime, pull)
            mlflow.log_param("calibration.temperature", metrics["calibration"]["temperature"])
            mlflow.log_metrics({f"val_ece_{k}": v for k, v in metrics["calibration"].items() if k != "temperature"})
        decision = decision_rule(cfg, meta["classes"], model, val_data, runtime, pull)
        if decision.positive_class is not None:
            metrics["decision"] = decision.as_dict()
            mlflow.log_params({"decision.threshold": decision.threshold})
            mlflow.log_metrics(
                {"val_positive_recall": decision.val_recall, "val_positive_precision": decision.val_precision}
            )
            log.log(logging.INFO if decision.confirmed else logging.WARNING, "train: decides %s", decision.describe())
        detector = None
        if cfg.train.unknown.accept is not None:
            detector = fit_detector(cfg, model, train_data, val_data, runtime)
            metrics["unknown"] = detector.as_dict()
            mlflow.log_params({f"unknown.{k}": v for k, v in detector.as_dict().items()})
        info = ModelInfo(
            model_config=cfg.model.model_dump(), classes=meta["classes"], image_size=meta["image_size"],
            channels=meta["channels"], mean=meta["mean"], std=meta["std"], bit_depth=meta["bit_depth"],
            run_id=active.info.run_id, data_version=version, decision=decision.as_dict(),
            temperature=float(model.temperature), novelty=detector and detector.as_dict(),
        )  # fmt: skip
        save_model(paths.model_file, model, info)
        write_json(paths.metrics / "train.json", metrics)
        with atomic_path(paths.metrics / "history.csv") as temporary:
            frame.to_csv(temporary, index=False)
        figures.training_curves(frame, paths.plots / "training_curves.png", kept_epoch)
        mlflow.log_artifact(str(paths.plots / "training_curves.png"), "plots")
        mlflow.log_artifact(str(paths.metrics / "history.csv"), "metrics")
    remove_checkpoints(paths.checkpoint)
    log.info("train: val accuracy %.4f -> %s (MLflow run %s)", metrics["val_accuracy"], paths.model_file, info.run_id)
    return TrainResult(info.run_id, frame, metrics)


def calibrate(model: AttentionCNN, val_data: TensorSplit, runtime: Runtime, weights: torch.Tensor | None) -> dict:
    """Fit the model's temperature on the validation split, with the pull of the loss's class `weights`
    (None: none) taken out of its logits; the temperature and the calibration error before and after."""
    model.temperature.fill_(1.0)
    model.offset.zero_()
    logits = predict_batches(model, val_data.images, runtime.scoring_batch(val_data.images), runtime).logits
    labels = val_data.labels.cpu()
    offset = prior_offset(weights, logits.shape[1])
    temperature = fit_temperature(logits, labels, offset)
    model.temperature.fill_(temperature)
    model.offset.copy_(offset)
    before = calibration_error(logits.softmax(1), labels)
    after = calibration_error((logits / temperature + offset).softmax(1), labels)
    log.info("train: temperature %.3f%s, validation calibration error %.2f %% -> %.2f %%", temperature,
             "" if weights is None else ", the class weights' pull taken out", 100 * before, 100 * after)  # fmt: skip
    return {"temperature": temperature, "before": before, "after": after}


def decision_rule(
    cfg: Config, classes: list[str], model: AttentionCNN, val_data: TensorSplit, runtime: Runtime,
    weights: torch.Tensor | None,
) -> Decision:  # fmt: skip
    """The most probable class (weighed by the class `weights` calibration took out, if any), or with
    `data.positive_class` its threshold for `train.positive_recall` with `train.positive_confidence`,
    chosen on the validation split (with the model's probabilities calibrated, their expected recall too)."""
    weighed = Decision(weights=None if weights is None else weights.tolist())
    if cfg.data.positive_class is None:
        return weighed
    logits = predict_batches(model, val_data.images, runtime.scoring_batch(val_data.images), runtime).logits
    return choose_threshold(
        logits.softmax(1).numpy(), val_data.labels.cpu().numpy(), classes, cfg.data.positive_class,
        cfg.train.positive_recall, cfg.train.positive_confidence, calibrated=cfg.train.calibrate,
        weights=weighed.weights,
    )  # fmt: skip


def fit_detector(
    cfg: Config, model: AttentionCNN, train_data: TensorSplit, val_data: TensorSplit, runtime: Runtime
) -> Novelty:
    """Give the model its "unknown" detector: the features of `train.unknown.bank` training images
    (seeded), and the threshold that accepts `train.unknown.accept` of the validation images."""
    settings = cfg.train.unknown
    rows = bank_rows(len(train_data.labels), settings.bank, cfg.train.seed).to(train_data.images.device)
    features = mean_features(model, train_data.images, runtime.scoring_batch(train_data.images), runtime, rows)
    model.attach_novelty(len(features), settings.neighbours).bank.copy_(unit_rows(features))
    scores = predict_batches(model, val_data.images, runtime.scoring_batch(val_data.images), runtime).novelty.numpy()
    detector = Novelty(
        neighbours=model.novelty.neighbours, bank=len(features),
        threshold=acceptance_threshold(scores, settings.accept), accept=settings.accept,
        detector=DETECTOR,
    )  # fmt: skip
    log.info(
        "train: unknown beyond novelty %.4f (%d-th nearest of %d training images; accepts %.0f %% of validation)",
        detector.threshold, detector.neighbours, detector.bank, 100 * settings.accept,
    )  # fmt: skip
    return detector


def main() -> None:
    cfg = load_config()
    if cfg.train.processes > 1 and not launched():
        launch(cfg.train.processes, "pipeline.train")
    else:
        run(cfg)


if __name__ == "__main__":
    run_cli(main)
