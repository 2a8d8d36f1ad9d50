"""How long and in what batches to train, from the params and the size of the training split.

The same params must train well on 1,000 and on 1,000,000 images. Two rules adapt them:
- an epoch has at least `train.min_steps_per_epoch` steps: the batch is cut to the training
  images over that number, rounded down to a power of two, never below 8, so a small set gets
  small batches, hence many steps, instead of a few steps that barely move the weights; the
  learning rates scale with the cut to the power `LR_EXPONENT`, 3/4 (batch 256 → 32: × 0.21,
  → 16: × 1/8), between the square root usual for Adam-type optimizers and the linear rule of SGD:
  at the square root (→ 16: × 1/4) one run in four on 2×2 mosaics of grey cells with one thin
  crack never learned the task (52.4 %, the attention's peak in the cracked quarter 36.7 %) where
  at half that rate it did (85.7 %, 89.0 %; BENCHMARKS.md "Which quarter holds the crack");
- the run has at least `train.min_steps` optimizer steps and trains on at least `train.min_images`
  images: `train.epochs` grows until it does both. The image floor keeps the halving of the batch
  from halving the run: under the step floor alone 1,021 images got batch 16 and 16 epochs where
  1,100 got batch 32 and 29, and on 2×2 mosaics of grey cells with one crack 16 epochs never
  learned the task (57.6 / 59.5 %, two seeds) where 32 did (84.8 / 89.3 %, BENCHMARKS.md
  "Which quarter holds the crack").
On Fashion-MNIST (54,000 training images, batch 256, 18 epochs: 3,798 steps) neither applies.
A third keeps large images in memory: a process's batch holds at most as many images as their
activations (each layer's output for one image, measured, twice: kept for the backward pass and
its gradients) fit in `ACTIVATION_SHARE` of the memory free for it, halved to a power of two, never
below 8, the learning rates scaled as for the first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.core.config import TrainConfig
from pipeline.core.durations import about
from pipeline.training.distributed import ONE_PROCESS, Ranks

SMALLEST_BATCH = 8
ACTIVATION_COPIES = 2  # the outputs kept for the backward pass, and their gradients
ACTIVATION_SHARE = 0.5  # of the memory free for training, what a batch's activations may take
LR_EXPONENT = 0.75  # a cut batch's learning rates × (batch / train.batch_size) ** LR_EXPONENT


def fitting_batch(image_bytes: int, free_bytes: int) -> int:
    """The most images whose activations (`image_bytes` each, `ACTIVATION_COPIES` times) fit in
    `ACTIVATION_SHARE` of `free_bytes`, halved to a power of two, never below `SMALLEST_BATCH`."""
    fits = ACTIVATION_SHARE * free_bytes // (ACTIVATION_COPIES * image_bytes)
    return max(SMALLEST_BATCH, 2 ** math.floor(math.log2(max(1, fits))))


@dataclass(frozen=True)
class Plan:
    """The batch size, epochs and optimizer steps a run uses, and why they differ from the params."""

    batch_size: int
    epochs: int
    steps_per_epoch: int
    lr_scale: float = 1.0  # the learning rates' factor, for the batch's cut
    reasons: tuple[str, ...] = ()

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def time_left(self, epoch: int, seconds: list[float]) -> str:
        """After `epoch`, the rest of the run at the mean of the epochs timed so far (`seconds`,
        training and validation each): `, about 12 min left`; nothing after the last epoch."""
        if epoch >= self.epochs or not seconds:
            return ""
        return f", {about((self.epochs - epoch) * sum(seconds) / len(seconds))} left"

    def describe(self) -> str:
        why = "; ".join(self.reasons) or "as the params say"
        scaled = f", learning rates × {self.lr_scale:.3g}" if self.lr_scale != 1 else ""
        return f"batch {self.batch_size}, {self.epochs} epochs, {self.steps} steps{scaled} ({why})"


def plan_training(
    cfg: TrainConfig, train_images: int, ranks: Ranks = ONE_PROCESS, image_bytes: int = 0, free_bytes: int = 0
) -> Plan:
    """The plan for `train_images` training images under `cfg`, split over `ranks`; with
    `image_bytes` (one image's activations) and `free_bytes` (memory free for a process), a batch
    that fits."""
    reasons = []
    batch = cfg.batch_size
    per_step = max(1, train_images // cfg.min_steps_per_epoch)
    largest = max(SMALLEST_BATCH, 2 ** math.floor(math.log2(per_step)))
    largest = max(largest, ranks.world_size)  # every rank needs at least one image per step
    if batch > largest:
        reasons.append(
            f"batch_size {batch} gives under min_steps_per_epoch {cfg.min_steps_per_epoch} on {train_images} images"
        )
        batch = largest - largest % ranks.world_size
    if image_bytes and free_bytes:
        fitting = fitting_batch(image_bytes, free_bytes)
        if batch // ranks.world_size > fitting:
            need = batch // ranks.world_size * ACTIVATION_COPIES * image_bytes
            reasons.append(
                f"batch_size {batch} needs about {need / 2**30:.1f} GB for its activations "
                f"({image_bytes / 2**20:.1f} MB an image), over {ACTIVATION_SHARE:.0%} of the "
                f"{free_bytes / 2**30:.1f} GB free"
            )
            batch = fitting * ranks.world_size
    lr_scale = (batch / cfg.batch_size) ** LR_EXPONENT
    steps_per_epoch = ranks.steps_per_epoch(train_images, batch)
    epochs = cfg.epochs
    if epochs * steps_per_epoch < cfg.min_steps:
        epochs = math.ceil(cfg.min_steps / steps_per_epoch)
        reasons.append(f"{cfg.epochs} epochs are {cfg.epochs * steps_per_epoch} steps, under min_steps {cfg.min_steps}")
    if epochs * train_images < cfg.min_images:
        reasons.append(f"{epochs} epochs are {epochs * train_images} images, under min_images {cfg.min_images}")
        epochs = math.ceil(cfg.min_images / train_images)
    return Plan(batch, epochs, steps_per_epoch, lr_scale, tuple(reasons))
