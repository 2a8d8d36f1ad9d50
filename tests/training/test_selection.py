"""The epoch a run keeps: the lowest validation loss with `train.keep: best`, the last with `last`."""

import math

import pytest
import torch
from torch import nn

from pipeline.training.selection import KeptEpoch


def run_epochs(kept: KeptEpoch, losses: list[float]) -> nn.Linear:
    """Epochs 1..n whose weights are all equal to the epoch's number, with these validation losses."""
    model = nn.Linear(3, 2)
    for epoch, loss in enumerate(losses, start=1):
        with torch.no_grad():
            for tensor in model.parameters():
                tensor.fill_(epoch)
        kept.update(epoch, loss, model)
    return model


def weights_epoch(model: nn.Module) -> set[float]:
    return {value for tensor in model.state_dict().values() for value in tensor.flatten().tolist()}


@pytest.mark.parametrize(
    ("losses", "expected"),
    [
        ([0.9, 0.3, 0.5, 0.7], 2),  # overfits after epoch 2
        ([0.9, 0.5, 0.4, 0.3], 4),  # still improving: the last
        ([0.9, 0.3, 0.3, 0.6], 3),  # a tie: the later epoch
        ([0.9, 0.4, math.nan, 0.8], 2),  # a NaN loss is never kept
    ],
)
def test_best_keeps_the_weights_of_the_lowest_validation_loss(losses, expected):
    kept = KeptEpoch("best")
    model = run_epochs(kept, losses)
    assert kept.restore(model, len(losses)) == expected
    assert weights_epoch(model) == {float(expected)}


def test_last_keeps_the_final_weights_whatever_the_losses():
    kept = KeptEpoch("last")
    model = run_epochs(kept, [0.9, 0.3, 0.5, 0.7])
    assert kept.restore(model, 4) == 4 and weights_epoch(model) == {4.0}


def test_the_choice_survives_a_checkpoint():
    before = KeptEpoch("best")
    run_epochs(before, [0.9, 0.3])
    resumed = KeptEpoch("best", before.state())
    model = nn.Linear(3, 2)
    for epoch, loss in ((3, 0.5), (4, 0.7)):
        with torch.no_grad():
            for tensor in model.parameters():
                tensor.fill_(epoch)
        resumed.update(epoch, loss, model)
    assert resumed.restore(model, 4) == 2 and weights_epoch(model) == {2.0}


def test_the_kept_copy_does_not_follow_later_training():
    kept = KeptEpoch("best")
    model = run_epochs(kept, [0.3])
    with torch.no_grad():
        model.weight.add_(10)  # training goes on in place after the copy
    kept.update(2, 0.9, model)
    assert kept.restore(model, 2) == 1 and weights_epoch(model) == {1.0}
