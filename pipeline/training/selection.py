"""Which epoch's weights a run keeps (`train.keep`): `best`, the epoch with the lowest validation
loss (ties: the later epoch), so that a small dataset that starts to overfit late in the schedule
keeps its model from before; or `last`, the final epoch's."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn


class KeptEpoch:
    """Follows the validation loss epoch by epoch and holds a CPU copy of the kept epoch's weights."""

    def __init__(self, keep: Literal["best", "last"], state: dict | None = None) -> None:
        self.keep = keep
        self.epoch, self.val_loss, self.weights = 0, math.inf, None
        if state is not None:  # from a checkpoint
            self.epoch, self.val_loss, self.weights = state["epoch"], state["val_loss"], state["weights"]

    def update(self, epoch: int, val_loss: float, model: nn.Module | None = None) -> bool:
        """Record an epoch's validation loss; whether this epoch is now the kept one (with `model`,
        its weights are copied)."""
        if self.keep == "best" and not val_loss <= self.val_loss:  # a NaN loss is never kept
            return False
        self.epoch, self.val_loss = epoch, val_loss
        if self.keep == "best" and model is not None:
            self.weights = {name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()}
        return True

    def state(self) -> dict:
        """What a checkpoint stores to resume the choice."""
        return {"epoch": self.epoch, "val_loss": self.val_loss, "weights": self.weights}

    def restore(self, model: nn.Module, last_epoch: int) -> int:
        """Load the kept epoch's weights into `model` (trained up to `last_epoch`); the kept epoch."""
        if self.weights is None or self.epoch == last_epoch:
            return last_epoch
        with torch.no_grad():
            model.load_state_dict(self.weights)
        return self.epoch
