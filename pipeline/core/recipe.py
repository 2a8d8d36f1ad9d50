"""What `auto` means for the keys that pick the network and how to fine-tune it.

One params file must serve 28-px centred garments and 300-px inspection photographs. `auto` keys are
filled from the data and from each other, and a key given a value keeps it:
- `model.backbone`: the small seed CNN, trained from scratch, at every image size; with
  `model.pretrained: true`, EfficientNet-Lite0, whose ImageNet weights come installed with the
  project. On real aerial images at 128 px the seed CNN was more accurate, in RGB and in grayscale,
  and its attention found the object's quarter of a mosaic 87-94 % of the time against 50-55 % for
  the pretrained network's 4×4 map (BENCHMARKS.md, "Which quarter holds the object");
- `model.pretrained`: true for EfficientNet-Lite0, and for resnet18 / vgg11_bn when a weights file
  is given; false for the seed CNN;
- `model.output_stride`: 4 for the seed CNN; for an ImageNet backbone, the coarsest stride it
  allows that still leaves an attention map of at least 8 cells a side (16 at 128 and 224 px: 8×8
  and 14×14 cells; its own 32 from 256 px). On the mosaics stride 16 against 32 gained 5 points of
  accuracy and found the quarter 75 % of the time instead of 50 %; the finer strides dilate the
  last stages, whose depthwise convolutions train about 2× slower on the CPU (52 → 23 images/s at
  128 px, 2-core Xeon);
- `train.freeze_epochs`: 2 with pretrained weights (the new head learns first, so its random
  gradients do not wreck the weights), else 0;
- `train.backbone_lr`: with pretrained weights, the head's rate / 8, else the head's rate (null);
- `model.attention`: gated scores for your own images (an image folder), the design's soft scores
  for the built-in Fashion-MNIST sources. On real aerial images with human-drawn boxes the gate
  was more accurate on both sets, pointed at crowns more often, and its map was as faithful or
  more (BENCHMARKS.md, "Attention variants on real images").
"""

from __future__ import annotations

MIN_MAP_CELLS = 8
SEED_CNN_STRIDE = 4
FREEZE_EPOCHS = 2
BACKBONE_LR_DIVISOR = 8


def backbone(pretrained: bool | str) -> tuple[str, str]:
    """The backbone for `model.pretrained` (true, false or auto), and why."""
    if pretrained is True:
        return "efficientnet_lite0", "model.pretrained true: EfficientNet-Lite0, whose ImageNet weights come installed"
    return "seed_cnn", "the small CNN from scratch (on real images more accurate, and its map finer, than ImageNet's)"


def attention(source: str) -> tuple[str, str]:
    """The attention's scoring for images from `source`, and why."""
    if source == "imagefolder":
        return "gated", "your own images: gated scores, more accurate on real images, and as faithful or more"
    return "soft", f"{source}: the design's soft scores (its reference runs)"


def pretrained(name: str, weights_file: str | None) -> bool:
    """Whether `name` starts from ImageNet weights: the ones that come installed, or a given file."""
    return name == "efficientnet_lite0" or (name in {"resnet18", "vgg11_bn"} and weights_file is not None)


def strides(name: str, is_pretrained: bool, widths: list[int]) -> list[int]:
    """The output strides `name` can give, coarsest first."""
    if name == "seed_cnn":
        native, finest = 2 ** len(widths), 1
    elif name == "efficientnet_lite0":
        native, finest = 32, 8  # dilating beyond its last two stages is not offered
    elif name == "resnet18":
        native = 32 if is_pretrained else 8  # from scratch: a 3×3 stride-1 stem, no max-pool
        finest = native // 8  # its last three stages can keep their input's size
    else:
        native, finest = 32, 1
    return [native >> shift for shift in range(native.bit_length()) if native >> shift >= finest]


def output_stride(name: str, is_pretrained: bool, widths: list[int], image_size: int) -> int:
    """The attention map's stride: the seed CNN's 4 (or its own, if coarser blocks are fewer); else
    the coarsest that leaves `MIN_MAP_CELLS` cells a side (the finest allowed if none does)."""
    allowed = strides(name, is_pretrained, widths)
    if name == "seed_cnn":
        return min(SEED_CNN_STRIDE, allowed[0])
    return next((s for s in allowed if image_size // s >= MIN_MAP_CELLS), allowed[-1])


def freeze_epochs(is_pretrained: bool) -> int:
    return FREEZE_EPOCHS if is_pretrained else 0


def backbone_lr(is_pretrained: bool, lr: float) -> float | None:
    return lr / BACKBONE_LR_DIVISOR if is_pretrained else None
