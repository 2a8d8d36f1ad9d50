import pytest
import torch
from torch import nn

from pipeline.data.splits import TensorSplit
from pipeline.training.distributed import ONE_PROCESS
from pipeline.training.loss import weighted_cross_entropy
from pipeline.training.steps import class_weights, epoch_batches


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(64, 3, generator=generator), torch.randint(0, 3, (64,), generator=generator)


def test_without_smoothing_it_is_pytorchs_weighted_mean(batch):
    logits, labels = batch
    weight = torch.tensor([0.5, 2.0, 7.0])
    ours = weighted_cross_entropy(logits, labels, weight)
    assert ours.item() == pytest.approx(nn.functional.cross_entropy(logits, labels, weight=weight).item(), rel=1e-6)


def test_with_equal_weights_it_is_pytorchs_smoothed_loss(batch):
    logits, labels = batch
    expected = nn.functional.cross_entropy(logits, labels, label_smoothing=0.1).item()
    assert weighted_cross_entropy(logits, labels, None, 0.1).item() == pytest.approx(expected, rel=1e-6)
    assert weighted_cross_entropy(logits, labels, torch.ones(3), 0.1).item() == pytest.approx(expected, rel=1e-6)


def test_smoothing_pulls_an_image_towards_its_own_class_whatever_the_weights():
    """An `ok` image of a 1 : 33 set (weights 0.52 and 17): raising its `ok` logit must lower the loss.
    PyTorch's weighted smoothing (the rare class's weight on every image's smoothing term) raises it."""
    weight = class_weights(torch.tensor([0] * 3300 + [1] * 100), 2)
    logits = torch.zeros(1, 2, requires_grad=True)
    weighted_cross_entropy(logits, torch.tensor([0]), weight, 0.1).backward()
    assert logits.grad[0, 0] < 0 < logits.grad[0, 1]


def test_a_rare_class_does_not_take_over_training():
    """A linear model on two separable classes, 3 % of one: trained with the balanced weights and
    smoothing 0.1, it tells them apart (PyTorch's weighted smoothing calls every point the rare class)."""
    generator = torch.Generator().manual_seed(0)
    labels = (torch.rand(2000, generator=generator) < 0.03).long()
    points = torch.randn(2000, 2, generator=generator) * 0.5 + labels[:, None] * 3.0
    model, weight = nn.Linear(2, 2), class_weights(labels, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(300):
        optimizer.zero_grad()
        weighted_cross_entropy(model(points), labels, weight, 0.1).backward()
        optimizer.step()
    predicted = model(points).argmax(1)
    recalls = [(predicted[labels == k] == k).float().mean().item() for k in (0, 1)]
    assert min(recalls) > 0.95


def test_sampled_batches_hold_every_class_about_as_often():
    """3 % of one class: drawn by the balanced weights, an epoch is half that class, each of its images
    16 or 17 times, and 500 different images of the other; near-equal weights give nearly a
    permutation; without weights, the epoch is the split in a random order."""
    labels = torch.tensor([0] * 970 + [1] * 30)
    split = TensorSplit(torch.arange(1000).view(1000, 1, 1, 1), labels)

    def epoch(weights):
        generator = torch.Generator().manual_seed(0)
        batches = epoch_batches(split, 64, 0, 1, generator, ONE_PROCESS, weights)
        return torch.cat([images.flatten() for images, _ in batches])

    drawn = epoch(class_weights(labels, 2))
    rare = torch.bincount(drawn[labels[drawn] == 1], minlength=1000)[970:]
    assert len(drawn) == 1000 and int(rare.sum()) == 500 and set(rare.tolist()) == {16, 17}
    assert len(set(drawn[labels[drawn] == 0].tolist())) == 500
    near_balanced = torch.tensor([1.0, 1.01])
    assert len(set(epoch(near_balanced).tolist())) >= 990
    assert sorted(epoch(None).tolist()) == list(range(1000))
