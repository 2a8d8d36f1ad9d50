"""The training steps' parts that need no training run: batch augmentation."""

import torch

from pipeline.core.config import AugmentConfig
from pipeline.training import steps


def test_augment_flips_whole_images_and_keeps_dtype():
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    out = steps.augment(images, AugmentConfig(hflip=True, max_shift=0), torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == images.shape
    same = (out == images).flatten(1).all(1)
    flipped = (out == images.flip(3)).flatten(1).all(1)
    assert (same | flipped).all() and same.any() and flipped.any()


def test_augment_shifts_by_at_most_max_shift():
    images = torch.zeros((32, 1, 10, 10), dtype=torch.uint8)
    images[:, :, 4, 4] = 255
    out = steps.augment(images, AugmentConfig(hflip=False, max_shift=2), torch.Generator().manual_seed(0))
    rows, cols = (out[:, 0] == 255).nonzero()[:, 1:].T
    assert ((rows - 4).abs() <= 2).all() and ((cols - 4).abs() <= 2).all()
    assert len(rows) == 32 and ((rows != 4) | (cols != 4)).any()
