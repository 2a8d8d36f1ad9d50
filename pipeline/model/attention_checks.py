"""Whether the attention shows what the prediction rests on: on any dataset, and where the object's
box is known, whether it finds the object.

- Near-empty regions, where "empty" means something: on images with a uniform background (at least
  75 % of the border's pixels within 10 % of the range of its median colour: a garment on black, a
  part on a belt; not a texture, a field or a solar cell), cells where under 10 % of the pixels
  differ from that background by more than 10 % of the range. The attention mass on them, and how
  often the peak sits on one, beside their share of all cells (chance); None unless at least half
  of the images have such a background (Fashion-MNIST: 98.6 %; NEON aerial patches: 3 %).
- Deletion (RISE's deletion metric): the image regions under the cells, taken in the map's order
  (most attended first), are replaced step by step through soft-edged masks (no drawn edges); the
  predicted class's probability along the way, as an area under the curve. Lower is more faithful;
  compare with a random order and with Grad-CAM's order (`pipeline/model/gradcam.py`). Replaced by
  (`evaluate.deletion_fill`) the image itself blurred (`blur`: removes the detail a cell holds, a
  crack or a lesion, without painting a new patch that can itself look like one) or the training
  mean colour (`mean`). Also per predicted class: a class that means absence (`ok`, `background`)
  has no region to delete, so its curves say little; the class that means presence (`defective`)
  is where the check means something.
- Localisation, where boxes are known: the pointing game (a hit when the attention peak's cell
  overlaps one of the image's boxes: a tolerance of one cell), beside a centre-point baseline (the
  middle cell); the attention mass inside the boxes (their union, to the pixel), beside the union's
  share of the image (chance). The same two figures score Grad-CAM's map.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

FOREGROUND_LEVEL = 0.1 * 255  # a pixel this far from the background colour is foreground
EMPTY_CELL = 0.1  # a cell with less foreground than this share is near-empty
UNIFORM_BORDER = 0.75  # a background is uniform when this share of the border is background-coloured
MEANINGFUL_SHARE = 0.5  # near-empty figures only where at least this share of the images has one
MAX_STEPS = 16
MASK_PIXELS = 2**24  # localisation and deletion: masks of this many pixels at a time (16 MB, 64 MB as floats)
NEAR_EMPTY_KEYS = ("near_empty_cell_share", "near_empty_attention_mass", "near_empty_peak_share")


def _border(pixels: torch.Tensor) -> torch.Tensor:
    return torch.cat([pixels[..., 0, :], pixels[..., -1, :], pixels[..., :, 0], pixels[..., :, -1]], dim=-1)


def foreground(images: torch.Tensor) -> torch.Tensor:
    """N×H×W: which pixels differ from the image's background, its border's median colour."""
    pixels = images.float()
    background = _border(pixels).median(dim=-1).values[..., None, None]  # N×C×1×1
    return ((pixels - background).abs() > FOREGROUND_LEVEL).any(dim=1)


def uniform_background(images: torch.Tensor) -> torch.Tensor:
    """N: whether each image's border is (almost all) one colour, so that "empty" means something."""
    border = _border(images.float())  # N×C×B
    off = ((border - border.median(dim=-1, keepdim=True).values).abs() > FOREGROUND_LEVEL).any(dim=1)
    return (~off).float().mean(dim=-1) >= UNIFORM_BORDER


def near_empty_cells(images: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """N×h×w: the attention grid's cells with under 10 % foreground pixels."""
    share = F.adaptive_avg_pool2d(foreground(images)[:, None].float(), grid)[:, 0]
    return share < EMPTY_CELL


def near_empty_figures(
    images: torch.Tensor, attention: torch.Tensor, batch: int = 256
) -> dict[str, float | int | None]:
    """Attention mass and peaks on near-empty cells, beside those cells' share of the grid, over the
    images with a uniform background (`near_empty_images` of them; the figures None when they are
    under half of the images). `images` (a tensor, or a split read from its shards) are looked at
    `batch` at a time."""
    uniform, empty = [], []
    for start in range(0, len(images), batch):
        block = images[start : start + batch]
        uniform.append(uniform_background(block))
        empty.append(near_empty_cells(block[uniform[-1]], tuple(attention.shape[1:])))
    uniform = torch.cat(uniform) if uniform else torch.zeros(0, dtype=torch.bool)
    attention = attention[uniform]
    if not len(attention) or len(attention) < MEANINGFUL_SHARE * len(uniform):
        return {"near_empty_images": len(attention), **dict.fromkeys(NEAR_EMPTY_KEYS)}
    flat_attention, flat_empty = attention.flatten(1), torch.cat(empty).flatten(1)
    peak_empty = flat_empty.gather(1, flat_attention.argmax(1, keepdim=True))[:, 0]
    return {
        "near_empty_images": len(attention),
        "near_empty_cell_share": flat_empty.float().mean().item(),
        "near_empty_attention_mass": (flat_attention * flat_empty).sum(1).mean().item(),
        "near_empty_peak_share": peak_empty.float().mean().item(),
    }


def deletion_steps(cells: int) -> np.ndarray:
    """The numbers of deleted cells at which a deletion curve is scored: MAX_STEPS + 1 evenly spaced
    fractions of the `cells` (every count when there are fewer)."""
    return np.linspace(0, cells, min(cells, MAX_STEPS) + 1).round().astype(int)


def deletion_curves(
    predict: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, order: torch.Tensor,
    grid: tuple[int, int], fill: torch.Tensor, soft_edges: bool = True, classes: torch.Tensor | None = None,
    ends: dict[int, np.ndarray] | None = None, progress: Callable[[], object] | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Each image's probability of its class in `classes` (N; None: its most probable before any
    deletion) as its cells are replaced by `fill` in `order` (N×cells, first deleted first), at
    MAX_STEPS + 1 evenly spaced fractions of the cells: N curves, and the N classes followed.

    A cell is blended into the fill through its mask upsampled bilinearly (as RISE's masks are), so
    that deleting draws no edge: with hard-edged cells (`soft_edges=False`, kept for the benchmark
    that compares them), the block borders read as cracks to a model of cracked solar cells
    (BENCHMARKS.md "Deleting without drawing edges"). `predict` maps uint8 images to class
    probabilities; `fill` is a C-channel colour (0..255) or images like `images` (`blurred(images)`).
    With nothing deleted and with every cell deleted the images are the same in every order: pass
    one `ends` dict to the calls for several orders of the same images, fill and classes, and those
    two points are scored once (a step's deleted-cell count: its probabilities). `progress` is
    called after each step.
    """
    cells = grid[0] * grid[1]
    steps = deletion_steps(cells)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(cells).expand_as(order))  # each cell's place in the order
    target = predict(images).argmax(1, keepdim=True) if classes is None else classes.view(-1, 1).long()
    fill = fill.view(1, -1, 1, 1) if fill.dim() == 1 else fill  # as floats a chunk at a time (blurred images: uint8)
    upsampling = {"mode": "bilinear", "align_corners": False} if soft_edges else {"mode": "nearest"}
    curves = []
    for deleted in steps:
        if ends is not None and deleted in ends:
            curves.append(ends[deleted])
        else:
            curves.append(_deleted_probabilities(predict, images, rank, deleted, grid, fill, upsampling, target))
            if ends is not None and deleted in (0, cells):
                ends[deleted] = curves[-1]
        if progress is not None:
            progress()
    return np.stack(curves, axis=1), target[:, 0].numpy()


def _deleted_probabilities(
    predict: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, rank: torch.Tensor, deleted: int,
    grid: tuple[int, int], fill: torch.Tensor, upsampling: dict, target: torch.Tensor,
) -> np.ndarray:  # fmt: skip
    """The probability of each image's `target` class with its first `deleted` cells (by `rank`) blended into `fill`."""
    chunk = max(1, MASK_PIXELS // images[0].numel())  # images blended at a time
    deleted_images = []
    for start in range(0, len(images), chunk):
        part = slice(start, start + chunk)
        mask = (rank[part] < deleted).view(-1, 1, *grid).float()
        mask = F.interpolate(mask, size=images.shape[-2:], **upsampling)
        own_fill = (fill[part] if len(fill) > 1 else fill).float()
        blended = images[part].float() * (1 - mask) + own_fill * mask
        deleted_images.append(blended.round_().clamp_(0, 255).to(images.dtype))
    return predict(torch.cat(deleted_images)).gather(1, target)[:, 0].numpy()


def blur_kernel(side: int) -> tuple[int, float]:
    """The blur fill's Gaussian for images whose short side is `side`: its width in taps (±3σ, odd,
    within the image) and σ = side / 8."""
    sigma = side / 8
    return min(2 * math.ceil(3 * sigma) + 1, side - 1 if side % 2 == 0 else side), sigma


def blurred(images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """uint8 images under a Gaussian blur of σ = 1/8 of their side: shapes stay, detail goes. The
    blur is separable: a row pass then a column pass (at 224 px 2 × 169 taps instead of 169²
    per pixel), in floats, `batch` images at a time."""
    from torchvision.transforms.v2 import functional

    kernel, sigma = blur_kernel(min(images.shape[-2:]))
    parts = []
    for start in range(0, len(images), batch):
        part = functional.gaussian_blur(images[start : start + batch].float(), [kernel, 1], [sigma, sigma])
        part = functional.gaussian_blur(part, [1, kernel], [sigma, sigma])
        parts.append(part.round_().clamp_(0, 255).to(images.dtype))
    return torch.cat(parts) if parts else images.clone()


def area(curve: np.ndarray) -> float:
    """Area under a deletion curve over the fraction of cells deleted (0..1)."""
    return float(np.trapezoid(curve, np.linspace(0, 1, len(curve))))


def faithfulness(auc: dict[str, float]) -> str:
    """One line on how the attention's deletion AUC compares with Grad-CAM's and a random order's."""
    attention = auc["attention"]
    if attention >= auc["random"]:
        return (
            "not faithful: deleting what the attention shows hurts the prediction no more than deleting at "
            "random; the overlays do not show what the prediction rests on"
        )
    if attention >= auc["gradcam"]:
        return "faithful, less than Grad-CAM: deleting in Grad-CAM's order hurts the prediction more"
    return "faithful: deleting what the attention shows hurts the prediction more than Grad-CAM's or a random order"


def map_order(maps: torch.Tensor) -> torch.Tensor:
    """N×cells: the cells from the highest to the lowest value of each map (most attended first)."""
    return maps.flatten(1).argsort(dim=1, descending=True, stable=True)


def random_order(count: int, cells: int, seed: int) -> torch.Tensor:
    """N×cells: a seeded random order of the cells for each image."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(cells, generator=generator) for _ in range(count)])


def boxed(boxes: torch.Tensor) -> torch.Tensor:
    """N booleans: which images of N×K×4 `boxes` (NaN rows pad) have at least one box."""
    return (~torch.isnan(boxes).any(dim=2)).any(dim=1)


def box_overlap(boxes: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """N×h×w: the share of each attention cell (of an H×W image) inside the union of each image's
    boxes (N×K×4, NaN rows pad), counted on the pixel grid (a pixel is in when its centre is)."""
    height, width = size
    xs, ys = torch.arange(width) + 0.5, torch.arange(height) + 0.5
    inside = torch.zeros(len(boxes), height, width, dtype=torch.bool)
    for box in boxes.float().unbind(1):  # NaN compares false: padding covers nothing
        across = (xs >= box[:, 0:1]) & (xs < box[:, 2:3])
        down = (ys >= box[:, 1:2]) & (ys < box[:, 3:4])
        inside |= down[:, :, None] & across[:, None, :]
    return F.adaptive_avg_pool2d(inside[:, None].float(), grid)[:, 0]


def localisation_figures(maps: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> dict:
    """Pointing game (the maps' and a centre baseline's) and the maps' mass inside the boxes (and its
    chance level), over the images with a box. `maps`: N×h×w, each summing to 1; `boxes`: N×K×4."""
    known = boxed(boxes)
    maps, boxes = maps[known].float(), boxes[known]
    if not len(boxes):
        return {"boxed_images": 0}
    grid = tuple(maps.shape[1:])
    centre = (grid[0] // 2) * grid[1] + grid[1] // 2
    chunk = max(1, MASK_PIXELS // (size[0] * size[1]))
    hits, centre_hits, mass, area = [], [], [], []
    for start in range(0, len(boxes), chunk):  # the pixel masks of a chunk of images at a time
        overlap = box_overlap(boxes[start : start + chunk], grid, size).flatten(1)
        part = maps[start : start + chunk].flatten(1)
        hits.append(overlap.gather(1, part.argmax(dim=1, keepdim=True))[:, 0] > 0)
        centre_hits.append(overlap[:, centre] > 0)
        mass.append((part * overlap).sum(1))
        area.append(overlap.mean(1))
    return {
        "boxed_images": len(boxes),
        "pointing_game": torch.cat(hits).float().mean().item(),
        "pointing_game_centre_baseline": torch.cat(centre_hits).float().mean().item(),
        "box_attention_mass": torch.cat(mass).mean().item(),
        "box_area_share": torch.cat(area).mean().item(),
    }
