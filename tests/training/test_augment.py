"""Batch augmentation: each image gets its own draw, whole batches at once, dtype and shape kept."""

import torch

from pipeline.core.config import AugmentConfig
from pipeline.training.augment import augment

NONE = {"hflip": False, "max_shift": 0}


def test_augment_flips_whole_images_and_keeps_dtype():
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    out = augment(images, AugmentConfig(hflip=True, max_shift=0), torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == images.shape
    same = (out == images).flatten(1).all(1)
    flipped = (out == images.flip(3)).flatten(1).all(1)
    assert (same | flipped).all() and same.any() and flipped.any()


def test_augment_shifts_by_at_most_max_shift():
    images = torch.zeros((32, 1, 10, 10), dtype=torch.uint8)
    images[:, :, 4, 4] = 255
    out = augment(images, AugmentConfig(hflip=False, max_shift=2), torch.Generator().manual_seed(0))
    rows, cols = (out[:, 0] == 255).nonzero()[:, 1:].T
    assert ((rows - 4).abs() <= 2).all() and ((cols - 4).abs() <= 2).all()
    assert len(rows) == 32 and ((rows != 4) | (cols != 4)).any()


def test_erasing_replaces_one_rectangle_in_the_chosen_share_of_images():
    images = torch.full((2000, 3, 20, 20), 7, dtype=torch.uint8)
    out = augment(images, AugmentConfig(**NONE, erasing=0.5), torch.Generator().manual_seed(0))
    changed = out != 7
    erased = changed.flatten(1).any(1)
    assert 0.45 < erased.float().mean() < 0.55  # the probability, per image
    share = changed[erased].any(1).flatten(1).float().mean(1)  # erased share of each image's pixels
    assert share.min() > 0.005 and share.max() < 0.40  # 2–33 % of the area (noise may hit 7 now and then)
    for image in changed[erased][:50].any(1):  # one filled rectangle: its bounding box is all noise
        rows, cols = image.nonzero().T
        box = image[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.float().mean() > 0.9
    channels_alike = (changed[erased].all(1) | ~changed[erased].any(1)).float().mean()
    assert channels_alike > 0.99  # the rectangle covers every channel


def test_no_erasing_leaves_images_alone_and_the_draw_is_reproducible():
    images = torch.randint(0, 256, (64, 1, 12, 12), dtype=torch.uint8)
    assert torch.equal(augment(images, AugmentConfig(**NONE), torch.Generator().manual_seed(0)), images)
    cfg = AugmentConfig(hflip=True, max_shift=2, erasing=0.5)
    first = augment(images, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(first, augment(images, cfg, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, augment(images, cfg, torch.Generator().manual_seed(4)))


def test_vertical_flips_and_quarter_turns_keep_each_image_whole():
    images = torch.randint(0, 256, (256, 1, 6, 6), dtype=torch.uint8)
    out = augment(images, AugmentConfig(**NONE, vflip=True), torch.Generator().manual_seed(0))
    same, flipped = ((out == images).flatten(1).all(1), (out == images.flip(2)).flatten(1).all(1))
    assert (same | flipped).all() and same.any() and flipped.any()
    out = augment(images, AugmentConfig(**NONE, rot90=True), torch.Generator().manual_seed(0))
    turned = torch.stack([(out == images.rot90(k, (2, 3))).flatten(1).all(1) for k in range(4)], 1)
    assert turned.any(1).all() and turned.any(0).all()  # each image one of the 4 turns; every turn drawn


def test_zoom_and_rotation_move_content_but_keep_a_flat_image_flat():
    flat = torch.full((64, 3, 16, 16), 200, dtype=torch.uint8)
    zoomed = augment(flat, AugmentConfig(**NONE, zoom=1.5), torch.Generator().manual_seed(0))
    assert (zoomed == 200).all()  # a crop inside the image: nothing from outside it comes in
    dot = torch.zeros((64, 1, 17, 17), dtype=torch.uint8)
    dot[:, :, 4, 8] = 255  # above the centre: a rotation moves it sideways
    turned = augment(dot, AugmentConfig(**NONE, rotate=90), torch.Generator().manual_seed(0))
    columns = turned[:, 0].float().sum(1).argmax(1)
    assert (columns != 8).float().mean() > 0.5 and turned.dtype == torch.uint8


def test_brightness_and_contrast_vary_per_image_within_their_range():
    images = torch.randint(60, 190, (500, 1, 8, 8), dtype=torch.uint8)
    out = augment(images, AugmentConfig(**NONE, brightness=0.2), torch.Generator().manual_seed(0))
    ratio = out.float().mean((1, 2, 3)) / images.float().mean((1, 2, 3))
    assert ratio.min() > 0.79 and ratio.max() < 1.21 and ratio.std() > 0.05
    out = augment(images, AugmentConfig(**NONE, contrast=0.5), torch.Generator().manual_seed(0))
    spread = out.float().std((1, 2, 3)) / images.float().std((1, 2, 3))
    assert spread.min() > 0.45 and spread.max() < 1.55 and spread.std() > 0.1
