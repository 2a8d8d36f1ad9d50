"""Batch augmentation on the device: whole uint8 batches at once, each image with its own draw.

The defaults: horizontal flips and shifts. To try on the validation split: `vflip` and `rot90`
for top-down images (aerial tiles, scans), `zoom` and `rotate` for photos taken at varying
distances and angles, `brightness` and `contrast` for varying light, `erasing` as a regulariser
(what each did here: docs/your-own-images.md).
The order of the draws keeps runs with only the first three reproducible across versions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pipeline.core.config import AugmentConfig

ERASED_AREA = (0.02, 0.33)  # Random Erasing's defaults (Zhong et al. 2020; torchvision's RandomErasing)
ERASED_ASPECT = (0.3, 3.3)


def augment(images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """The augmentations `cfg` switches on, applied to a uint8 N×C×H×W batch; same dtype and shape."""
    if cfg.hflip:
        images = hflip(images, generator)
    if cfg.max_shift:
        images = shift(images, cfg.max_shift, generator)
    if cfg.erasing:
        images = erase(images, cfg.erasing, generator)
    if cfg.vflip:
        images = hflip(images.transpose(2, 3), generator).transpose(2, 3)
    if cfg.rot90 and images.shape[2] == images.shape[3]:
        images = quarter_turns(images, generator)
    if cfg.zoom > 1 or cfg.rotate:
        images = zoom_and_rotate(images, cfg.zoom, cfg.rotate, generator)
    if cfg.brightness or cfg.contrast:
        images = brightness_contrast(images, cfg.brightness, cfg.contrast, generator)
    return images


def _uniform(batch: int, low: float, high: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return low + (high - low) * torch.rand(batch, generator=generator, device=device)


def hflip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Half of the images mirrored left to right."""
    flip = torch.rand(len(images), generator=generator, device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image moved by up to `max_shift` pixels along each axis, the border filled with zeros."""
    batch, _, height, width = images.shape
    device = images.device
    padded = F.pad(images, (max_shift, max_shift, max_shift, max_shift))
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, batch), generator=generator, device=device)
    rows = dy[:, None] + torch.arange(height, device=device)
    cols = dx[:, None] + torch.arange(width, device=device)
    batch_index = torch.arange(batch, device=device)[:, None, None]
    return padded[batch_index, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def erase(images: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """Random Erasing: with `probability`, one rectangle of each image (2–33 % of its area, aspect
    0.3–3.3) replaced by random pixel values."""
    batch, _, height, width = images.shape
    device = images.device
    area = _uniform(batch, *ERASED_AREA, generator, device) * height * width
    aspect = torch.exp(_uniform(batch, *(math.log(a) for a in ERASED_ASPECT), generator, device))
    tall = (area * aspect).sqrt().round().clamp(1, height)
    wide = (area / aspect).sqrt().round().clamp(1, width)
    top = (torch.rand(batch, generator=generator, device=device) * (height - tall + 1)).floor()
    left = (torch.rand(batch, generator=generator, device=device) * (width - wide + 1)).floor()
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    inside_rows = (rows >= top[:, None]) & (rows < (top + tall)[:, None])
    inside_cols = (cols >= left[:, None]) & (cols < (left + wide)[:, None])
    chosen = torch.rand(batch, generator=generator, device=device) < probability
    mask = (inside_rows[:, :, None] & inside_cols[:, None, :] & chosen[:, None, None])[:, None]
    noise = torch.randint(0, 256, images.shape, generator=generator, device=device, dtype=torch.uint8)
    return torch.where(mask, noise, images)


def quarter_turns(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each (square) image turned by 0, 90, 180 or 270 degrees."""
    turns = torch.randint(0, 4, (len(images),), generator=generator, device=images.device)
    out = images
    for k in (1, 2, 3):
        out = torch.where((turns == k)[:, None, None, None], images.rot90(k, (2, 3)), out)
    return out


def zoom_and_rotate(images: torch.Tensor, zoom: float, degrees: float, generator: torch.Generator) -> torch.Tensor:
    """A random resized crop and rotation in one resampling (bilinear): each image zoomed in by 1 to
    `zoom` at a random place that keeps the crop inside it, and turned by up to ± `degrees` (corners
    that come from outside the image repeat its edge)."""
    batch, device = len(images), images.device
    scale = 1 / _uniform(batch, 1.0, zoom, generator, device)  # the crop's side, as a share of the image's
    angle = torch.deg2rad(_uniform(batch, -degrees, degrees, generator, device))
    centre = (1 - scale)[:, None] * (2 * torch.rand(batch, 2, generator=generator, device=device) - 1)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, centre[:, 0]], 1), torch.stack([sin, cos, centre[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    resampled = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return resampled.round().clamp(0, 255).to(torch.uint8)


def brightness_contrast(
    images: torch.Tensor, brightness: float, contrast: float, generator: torch.Generator
) -> torch.Tensor:
    """Each image's distance from its own mean scaled by 1 ± up to `contrast`, then its values by
    1 ± up to `brightness`."""
    batch, device = len(images), images.device
    pixels = images.float()
    mean = pixels.mean((1, 2, 3), keepdim=True)
    contrasts = _uniform(batch, 1 - contrast, 1 + contrast, generator, device)[:, None, None, None]
    gains = _uniform(batch, 1 - brightness, 1 + brightness, generator, device)[:, None, None, None]
    return (((pixels - mean) * contrasts + mean) * gains).round().clamp(0, 255).to(torch.uint8)
