"""The training steps, built the same way for the train stage and the benchmarks: the seeded model,
optimizer, schedule and loss, batch augmentation on the device, one epoch, and validation.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from pipeline.core.config import Config, TrainConfig
from pipeline.core.memory import free_for_training
from pipeline.data.shards import stream_batches
from pipeline.data.splits import TensorSplit
from pipeline.model.network import AttentionCNN
from pipeline.training.augment import augment
from pipeline.training.distributed import ONE_PROCESS, Ranks
from pipeline.training.loss import weighted_cross_entropy
from pipeline.training.plan import Plan, plan_training
from pipeline.training.runtime import Runtime, predict_batches


def make_optimizer(model: AttentionCNN, cfg: TrainConfig, lr_scale: float = 1.0) -> torch.optim.Optimizer:
    """The optimizer at `lr` × `lr_scale`; with `train.backbone_lr`, the feature extractor learns at
    that rate (× `lr_scale`), the rest at `lr`."""
    lr = cfg.lr * lr_scale
    params: list = list(model.parameters())
    if cfg.backbone_lr is not None:
        backbone = list(model.features.parameters())
        in_backbone = set(backbone)
        head = [p for p in model.parameters() if p not in in_backbone]
        params = [{"params": head, "lr": lr}, {"params": backbone, "lr": cfg.backbone_lr * lr_scale}]
    fused = next(model.parameters()).is_cuda  # one kernel for the whole update on CUDA
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, fused=fused)


def make_schedule(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "onecycle":
        max_lr = [group["lr"] for group in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)


@dataclass(frozen=True)
class Training:
    """Everything a training step uses, built the same way for the train stage and the benchmark."""

    model: AttentionCNN  # the module whose weights are saved, and that validates
    step_model: nn.Module  # what runs the steps: `model`, in DDP across ranks, torch.compile'd (train.compile)
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    class_weights: torch.Tensor | None  # train.class_weights on the device; None: every class alike
    label_smoothing: float
    plan: Plan  # the batch size and epochs, adapted to the training split's size


def build_training(
    cfg: Config, meta: dict, runtime: Runtime, train_labels: torch.Tensor, ranks: Ranks = ONE_PROCESS,
    val_labels: torch.Tensor | None = None,
) -> Training:  # fmt: skip
    """The seeded model, optimizer, learning-rate schedule and loss for an epoch of `train_labels`;
    the class weights from the shares of `train_labels` and `val_labels` together."""
    torch.manual_seed(cfg.train.seed)
    classes = len(meta["classes"])
    model = AttentionCNN(
        cfg.model, meta["channels"], classes, meta["mean"], meta["std"], pretrained=cfg.model.pretrained
    )
    model = runtime.prepare(model)
    image_bytes = activation_bytes(model, meta["channels"], meta["image_size"], runtime)
    free = ranks.from_main(free_for_training(runtime.device))  # one plan for every rank
    if runtime.device.type != "cuda":
        free //= ranks.world_size  # processes on one machine share its memory; GPUs each have their own
    plan = plan_training(cfg.train, len(train_labels), ranks, image_bytes, free)
    optimizer = make_optimizer(model, cfg.train, plan.lr_scale)
    schedule = make_schedule(optimizer, cfg.train, plan.steps)
    # the shares of every image training sees: the validation split, drawn by content hash, takes more
    # of one class than of another by chance (the training split alone gave a balanced folder 0.93-1.10)
    labelled = train_labels.cpu() if val_labels is None else torch.cat([train_labels.cpu(), val_labels.cpu()])
    weights = class_weights(labelled, classes) if cfg.train.class_weights == "balanced" else None
    if weights is not None and bool((weights == weights[0]).all()):
        weights = None  # balanced data: nothing to weigh, and shuffled epochs as without weights

    step_model = ranks.wrap(model, some_frozen=cfg.train.freeze_epochs > 0)
    if cfg.train.compile:  # the training steps only: validation is a small share, not worth a second graph
        step_model = torch.compile(step_model)
    on_device = None if weights is None else weights.to(runtime.device)
    return Training(model, step_model, optimizer, schedule, on_device, cfg.train.label_smoothing, plan)


def activation_bytes(model: nn.Module, channels: int, image_size: int, runtime: Runtime) -> int:
    """Bytes of every layer's output for one image of `image_size` px in `runtime`'s precision:
    what a training step keeps per image for the backward pass (measured by a forward pass)."""
    total = 0

    def count(_module: nn.Module, _inputs: tuple, output: object) -> None:
        nonlocal total
        for tensor in output if isinstance(output, tuple | list) else (output,):
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    training = model.training
    try:
        model.eval()  # no batch-norm statistics change
        with torch.no_grad(), runtime.autocast():
            model(torch.zeros(1, channels, image_size, image_size, dtype=torch.uint8, device=runtime.device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(training)
    return total


def class_weights(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Each class weighed by 1 / its share of `labels`: n / (classes present · n_class), as
    scikit-learn's 'balanced' (1.0 each for balanced data); a class without images gets no weight."""
    counts = torch.bincount(labels.cpu(), minlength=classes).float()
    present = int((counts > 0).sum())
    return torch.where(counts > 0, len(labels) / (present * counts.clamp(min=1)), 0.0)


def attention_entropy(attention: torch.Tensor) -> torch.Tensor:
    """Each map's entropy over its n cells divided by log n: 1 for uniform attention, 0 for one
    cell. As a loss term (`train.attention_entropy`) it asks for maps that commit to a region."""
    flat = attention.flatten(1).float()
    return -(flat * flat.clamp(min=1e-12).log()).sum(1) / math.log(max(flat.shape[1], 2))


def split_loss(training: Training, logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The training loss (class weights, label smoothing) of a split's logits, on the CPU: each
    class weighed as the training batches weigh it, by sampling or in the loss."""
    weight = training.class_weights
    return weighted_cross_entropy(
        logits.cpu(), labels.cpu(), None if weight is None else weight.cpu(), training.label_smoothing
    ).item()


def evaluate_split(training: Training, split: TensorSplit, runtime: Runtime) -> tuple[float, float]:
    """Loss and accuracy of the model on a split (computed on the CPU, where the logits come back)."""
    logits = predict_batches(training.model, split.images, runtime.scoring_batch(split.images), runtime).logits
    labels = split.labels.cpu()
    return split_loss(training, logits, labels), (logits.argmax(1) == labels).float().mean().item()


def peak_memory_mb(runtime: Runtime) -> float:
    """Peak memory so far: GPU memory allocated by PyTorch on CUDA, else the process's peak RSS."""
    if runtime.device.type == "cuda":
        return torch.cuda.max_memory_allocated(runtime.device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def epoch_batches(
    data: TensorSplit, batch_size: int, seed: int, epoch: int, generator: torch.Generator, ranks: Ranks,
    weights: torch.Tensor | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """This rank's (images, labels) batches of an epoch on the generator's device: from memory in a
    seeded random order cut as DistributedSampler cuts it, or streamed from the split's shards. With
    class `weights` (in memory), the epoch is `weighted_epoch`'s."""
    device = generator.device
    if data.streamed:
        for images, labels in stream_batches(data.images.folder, batch_size, seed, epoch):
            yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        return
    if weights is None:
        order = torch.randperm(len(data.labels), generator=generator, device=device)
    else:
        order = weighted_epoch(data.labels.to(device), weights.to(device), generator)
    order = ranks.shard(order)
    for first in range(0, len(order), batch_size):
        index = order[first : first + batch_size]
        yield data.images[index], data.labels[index]


def weighted_epoch(labels: torch.Tensor, weights: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """An epoch of as many images as `labels` holds, each class's share of it in proportion to its
    images × its weight (balanced weights: every class alike), in a random order: a class with
    fewer images than its share is passed over whole as often as it fits, the rest of it drawn
    without replacement; a class with more gives a random part of itself. Nearly balanced data
    (weights near 1) gives nearly a permutation: every image seen about once an epoch."""
    counts = torch.bincount(labels, minlength=len(weights)).to(weights.dtype)
    mass = counts * weights
    quota = torch.floor(mass / mass.sum() * len(labels)).long()
    quota[torch.argmax(mass)] += len(labels) - int(quota.sum())  # rounding: the largest share takes the rest
    by_class = torch.argsort(labels, stable=True).split(counts.long().tolist())  # each class's indices, ascending
    parts = []
    for members, wanted in zip(by_class, quota.tolist(), strict=True):
        while wanted > 0:
            take = min(wanted, len(members))
            parts.append(members[torch.randperm(len(members), generator=generator, device=labels.device)[:take]])
            wanted -= take
    order = torch.cat(parts)
    return order[torch.randperm(len(order), generator=generator, device=labels.device)]


def train_epoch(
    training: Training, data: TensorSplit, cfg: TrainConfig, runtime: Runtime, epoch: int, ranks: Ranks = ONE_PROCESS
) -> dict[str, float]:
    """One pass over the training split (this rank's shard of it) in seeded random order; returns
    loss, accuracy, seconds and images/s over all ranks."""
    model, optimizer, schedule = training.step_model, training.optimizer, training.schedule
    # class weights act by sampling (in memory, `train.balance: sampling`) or in the loss (streamed, or `loss`)
    sampled = training.class_weights is not None and cfg.balance == "sampling" and not data.streamed
    loss_weights = None if sampled else training.class_weights
    model.train()
    training.model.freeze_features(epoch <= cfg.freeze_epochs)
    # dropout: the same per epoch, so a resumed run matches; different on each rank
    torch.manual_seed((cfg.seed + epoch) * ranks.world_size + ranks.rank)
    generator = torch.Generator(device=runtime.device).manual_seed(cfg.seed + epoch)
    batch_size = ranks.per_rank_batch(training.plan.batch_size)
    total_loss = torch.zeros((), device=runtime.device)
    correct = torch.zeros((), device=runtime.device, dtype=torch.int64)
    seen, start = 0, time.perf_counter()
    progress = tqdm(
        epoch_batches(data, batch_size, cfg.seed, epoch, generator, ranks, training.class_weights if sampled else None),
        total=training.plan.steps_per_epoch, desc=f"epoch {epoch}/{training.plan.epochs}", leave=False,
        disable=None if ranks.is_main else True,
    )  # fmt: skip
    for step, (batch, labels) in enumerate(progress):
        images = augment(batch, cfg.augment, generator).contiguous(memory_format=runtime.memory_format)
        with runtime.autocast():
            out = model(images)
            logits = out.logits
            loss = weighted_cross_entropy(logits.float(), labels, loss_weights, training.label_smoothing)
            if cfg.attention_entropy:
                loss = loss + cfg.attention_entropy * attention_entropy(out.attention).mean()
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
