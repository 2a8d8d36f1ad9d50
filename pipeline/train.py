"""Stage 3, train: the attention CNN on the preprocessed tensors, tracked in MLflow.

Reads `data/processed/`; writes `models/model.pt`, `metrics/train.json`, `metrics/history.csv`
and `plots/training_curves.png`. A checkpoint (`models/checkpoint.pt`, and the one before it) is
written after every epoch: running the stage again after an interruption, even a kill, resumes
from the last good one, in the same MLflow run. With `train.processes: N` (or under torchrun) it
trains data-parallel (`pipeline/distributed.py`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import resource
import time
from dataclasses import dataclass

import mlflow
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pipeline import figures
from pipeline.checkpoints import remove_checkpoints, restore, resume, save_checkpoint
from pipeline.config import AugmentConfig, Config, TrainConfig, load_config
from pipeline.distributed import ONE_PROCESS, Ranks, launch, launched, process_group
from pipeline.errors import PipelineError, run_cli
from pipeline.files import atomic_path, write_json
from pipeline.model import AttentionCNN
from pipeline.model_file import ModelInfo, save_model
from pipeline.runtime import Runtime, predict_batches, select_runtime, uses_cuda
from pipeline.splits import TensorSplit, load_split
from pipeline.tracking import connect, data_version, git_commit

log = logging.getLogger(__name__)


def augment(images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and shifts of up to `max_shift` pixels, on a whole uint8 batch at once."""
    batch, _, height, width = images.shape
    device = images.device
    if cfg.hflip:
        flip = torch.rand(batch, generator=generator, device=device) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(3), images)
    if cfg.max_shift:
        shift = cfg.max_shift
        padded = F.pad(images, (shift, shift, shift, shift))
        dy, dx = torch.randint(0, 2 * shift + 1, (2, batch), generator=generator, device=device)
        rows = dy[:, None] + torch.arange(height, device=device)
        cols = dx[:, None] + torch.arange(width, device=device)
        batch_index = torch.arange(batch, device=device)[:, None, None]
        images = padded[batch_index, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    return images


def make_optimizer(model: AttentionCNN, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer; with `train.backbone_lr`, the feature extractor learns at that rate, the rest at `lr`."""
    params: list = list(model.parameters())
    if cfg.backbone_lr is not None:
        backbone = list(model.features.parameters())
        in_backbone = set(backbone)
        head = [p for p in model.parameters() if p not in in_backbone]
        params = [{"params": head, "lr": cfg.lr}, {"params": backbone, "lr": cfg.backbone_lr}]
    fused = next(model.parameters()).is_cuda  # one kernel for the whole update on CUDA
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay, fused=fused
        )
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def make_schedule(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "onecycle":
        max_lr = [group["lr"] for group in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)


def fingerprint(cfg: Config, meta: dict) -> str:
    """What a checkpoint must match to be resumed: the data, model and training settings."""
    settings = {
        "data": cfg.data.model_dump(),
        "model": cfg.model.model_dump(),
        "train": cfg.train.model_dump(),
        "meta": meta,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Training:
    """Everything a training step uses, built the same way for the train stage and the benchmark."""

    model: AttentionCNN  # the module whose weights are saved, and that validates
    step_model: nn.Module  # what runs the steps: `model`, in DDP across ranks, torch.compile'd (train.compile)
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    loss_fn: nn.Module


def build_training(
    cfg: Config, meta: dict, runtime: Runtime, train_images: int, ranks: Ranks = ONE_PROCESS
) -> Training:
    """The seeded model, optimizer, learning-rate schedule and loss for `train_images` per epoch."""
    torch.manual_seed(cfg.train.seed)
    model = AttentionCNN(
        cfg.model, meta["channels"], len(meta["classes"]), meta["mean"], meta["std"], pretrained=cfg.model.pretrained
    )
    model = runtime.prepare(model)
    optimizer = make_optimizer(model, cfg.train)
    steps_per_epoch = ranks.steps_per_epoch(train_images, cfg.train.batch_size)
    schedule = make_schedule(optimizer, cfg.train, cfg.train.epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)

    step_model = ranks.wrap(model, some_frozen=cfg.train.freeze_epochs > 0)
    if cfg.train.compile:  # the training steps only: validation is a small share, not worth a second graph
        step_model = torch.compile(step_model)
    return Training(model, step_model, optimizer, schedule, loss_fn)


def evaluate_split(training: Training, split: TensorSplit, runtime: Runtime) -> tuple[float, float]:
    """Loss and accuracy of the model on a split."""
    logits, _ = predict_batches(training.model, split.images, 1024, runtime)
    loss = training.loss_fn(logits, split.labels).item()
    return loss, (logits.argmax(1) == split.labels).float().mean().item()


def peak_memory_mb(runtime: Runtime) -> float:
    """Peak memory so far: GPU memory allocated by PyTorch on CUDA, else the process's peak RSS."""
    if runtime.device.type == "cuda":
        return torch.cuda.max_memory_allocated(runtime.device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_epoch(
    training: Training, data: TensorSplit, cfg: TrainConfig, runtime: Runtime, epoch: int, ranks: Ranks = ONE_PROCESS
) -> dict[str, float]:
    """One pass over the training split (this rank's shard of it) in seeded random order; returns
    loss, accuracy, seconds and images/s over all ranks."""
    model, optimizer, schedule, loss_fn = training.step_model, training.optimizer, training.schedule, training.loss_fn
    model.train()
    training.model.freeze_features(epoch <= cfg.freeze_epochs)
    # dropout: the same per epoch, so a resumed run matches; different on each rank
    torch.manual_seed((cfg.seed + epoch) * ranks.world_size + ranks.rank)
    generator = torch.Generator(device=runtime.device).manual_seed(cfg.seed + epoch)
    order = ranks.shard(torch.randperm(len(data.labels), generator=generator, device=runtime.device))
    batch_size = ranks.per_rank_batch(cfg.batch_size)
    total_loss = torch.zeros((), device=runtime.device)
    correct = torch.zeros((), device=runtime.device, dtype=torch.int64)
    seen, start = 0, time.perf_counter()
    batches = range(0, len(order), batch_size)
    progress = tqdm(batches, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, disable=None if ranks.is_main else True)
    for step, first in enumerate(progress):
        index = order[first : first + batch_size]
        images = augment(data.images[index], cfg.augment, generator).contiguous(memory_format=runtime.memory_format)
        labels = data.labels[index]
        with runtime.autocast():
            logits = model(images).logits
            loss = loss_fn(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        total_loss += loss.detach() * len(labels)
        correct += (logits.argmax(1) == labels).sum()
        seen += len(labels)
        if step % 20 == 0:
            rate = seen / (time.perf_counter() - start)
            progress.set_postfix(loss=f"{loss.item():.3f}", acc=f"{correct.item() / seen:.3f}", img_s=f"{rate:.0f}")
    totals = torch.stack([total_loss.double(), correct.double(), total_loss.new_tensor(seen, dtype=torch.float64)])
    loss_sum, correct_sum, seen_sum = ranks.sum(totals).tolist()
    seconds = time.perf_counter() - start
    return {
        "train_loss": loss_sum / seen_sum,
        "train_accuracy": correct_sum / seen_sum,
        "seconds": seconds,
        "images_per_second": seen_sum / seconds,
    }


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
    paths = cfg.paths
    meta_path = paths.processed / "meta.json"
    if not meta_path.is_file():
        raise PipelineError(
            f"{meta_path}: no preprocessed data; run the preprocess stage first ('dvc repro preprocess')"
        )
    meta = json.loads(meta_path.read_text())
    with process_group(uses_cuda(cfg.train.device)) as ranks:
        return _train(cfg, meta, ranks)


def _train(cfg: Config, meta: dict, ranks: Ranks) -> TrainResult | None:
    paths = cfg.paths
    experiment_id = connect(cfg) if ranks.is_main else None  # fail fast, before any training
    runtime = select_runtime(cfg.train.device, cfg.train.precision, ranks.local_rank)
    train_data, val_data = (load_split(paths.processed / f"{name}.pt") for name in ("train", "val"))
    train_data = TensorSplit(train_data.images.to(runtime.device), train_data.labels.to(runtime.device))

    training = build_training(cfg, meta, runtime, len(train_data.labels), ranks)
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
    if not ranks.is_main:
        for epoch in range(first_epoch, cfg.train.epochs + 1):
            train_epoch(training, train_data, cfg.train, runtime, epoch, ranks=ranks)
        return None

    version = data_version(cfg)
    log.info(
        "train: %s × %d, %d train / %d val images, data %s",
        runtime.name,
        ranks.world_size,
        len(train_data.labels),
        len(val_data.labels),
        version,
    )
    # MLflow would tag a new run with this machine's absolute path of the script
    source_tag = None if run_id else {"mlflow.source.name": "pipeline/train.py"}
    with mlflow.start_run(run_id=run_id, experiment_id=experiment_id, tags=source_tag) as active:
        if checkpoint is None:
            mlflow.log_params(cfg.as_flat_params())
            mlflow.set_tags({"data_version": version, "git_commit": git_commit(cfg.root), "runtime": runtime.name})
        for epoch in range(first_epoch, cfg.train.epochs + 1):
            lr = optimizer.param_groups[0]["lr"]
            row = {"epoch": epoch, **train_epoch(training, train_data, cfg.train, runtime, epoch, ranks=ranks)}
            started = time.perf_counter()
            row["val_loss"], row["val_accuracy"] = evaluate_split(training, val_data, runtime)
            row["val_seconds"] = time.perf_counter() - started
            row["lr"] = lr
            history.append(row)
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
            log.info(
                "epoch %d/%d  loss %.4f  acc %.4f  val_loss %.4f  val_acc %.4f  %.0f img/s",
                epoch, cfg.train.epochs, row["train_loss"], row["train_accuracy"],
                row["val_loss"], row["val_accuracy"], row["images_per_second"],
            )  # fmt: skip
            save_checkpoint(paths.checkpoint, {
                "fingerprint": expected, "epoch": epoch, "run_id": active.info.run_id, "history": history,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
            })  # fmt: skip

        frame = pd.DataFrame(history)
        last = history[-1]
        metrics = {
            "epochs": len(history),
            "train_loss": last["train_loss"],
            "train_accuracy": last["train_accuracy"],
            "val_loss": last["val_loss"],
            "val_accuracy": last["val_accuracy"],
            "images_per_second": float(frame["images_per_second"].median()),
            "train_seconds": round(float(frame["seconds"].sum()), 1),
            "validation_seconds": round(float(frame["val_seconds"].sum()), 1),
            "peak_memory_mb": round(peak_memory_mb(runtime)),
        }
        mlflow.log_metric("peak_memory_mb", metrics["peak_memory_mb"])
        info = ModelInfo(
            model_config=cfg.model.model_dump(), classes=meta["classes"], image_size=meta["image_size"],
            channels=meta["channels"], mean=meta["mean"], std=meta["std"],
            run_id=active.info.run_id, data_version=version,
        )  # fmt: skip
        save_model(paths.model_file, model, info)
        write_json(paths.metrics / "train.json", metrics)
        with atomic_path(paths.metrics / "history.csv") as temporary:
            frame.to_csv(temporary, index=False)
        figures.training_curves(frame, paths.plots / "training_curves.png")
        mlflow.log_artifact(str(paths.plots / "training_curves.png"), "plots")
        mlflow.log_artifact(str(paths.metrics / "history.csv"), "metrics")
    remove_checkpoints(paths.checkpoint)
    log.info("train: val accuracy %.4f -> %s (MLflow run %s)", metrics["val_accuracy"], paths.model_file, info.run_id)
    return TrainResult(info.run_id, frame, metrics)


def main() -> None:
    cfg = load_config()
    if cfg.train.processes > 1 and not launched():
        launch(cfg.train.processes, "pipeline.train")
    else:
        run(cfg)


if __name__ == "__main__":
    run_cli(main)
