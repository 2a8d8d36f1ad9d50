"""`auto`: the network and its fine-tuning follow the params and the images' size; a key given a
value keeps it."""

import pytest

from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError


def auto(tmp_path, **overrides):
    (tmp_path / "params.yaml").write_text("data: {source: imagefolder, path: images}\n")
    return load_config(tmp_path / "params.yaml", overrides)


@pytest.mark.parametrize("size", [28, 128, 300])
def test_images_of_any_size_get_the_seed_cnn_from_scratch(tmp_path, size):
    cfg = auto(tmp_path, **{"data.image_size": size})
    assert (cfg.model.backbone, cfg.model.pretrained, cfg.model.output_stride) == ("seed_cnn", False, 4)
    assert (cfg.train.freeze_epochs, cfg.train.backbone_lr) == (0, None)
    assert any(line.startswith("model.backbone seed_cnn: the small CNN from scratch") for line in cfg.chosen)


@pytest.mark.parametrize(
    ("source", "given", "attention"),
    [("imagefolder", None, "gated"), ("fashion-mnist", None, "soft"), ("cluttered-fashion-mnist", None, "soft"),
     ("imagefolder", "soft", "soft"), ("fashion-mnist", "gated", "gated")],
)  # fmt: skip
def test_an_image_folder_gets_gated_attention_and_fashion_mnist_the_designs_soft_attention(
    tmp_path, source, given, attention
):
    overrides = {"data.source": source} | ({"model.attention": given} if given else {})
    cfg = auto(tmp_path, **overrides)
    assert cfg.model.attention == attention
    assert any(line.startswith(f"model.attention {attention}: ") for line in cfg.chosen) == (given is None)


@pytest.mark.parametrize(("size", "stride"), [(128, 16), (224, 16), (256, 32), (300, 32), (1024, 32)])
def test_pretrained_true_fine_tunes_the_installed_imagenet_weights_with_a_map_of_at_least_8_cells(
    tmp_path, size, stride
):
    cfg = auto(tmp_path, **{"data.image_size": size, "model.pretrained": True})
    assert (cfg.model.backbone, cfg.model.output_stride) == ("efficientnet_lite0", stride)
    assert (cfg.train.freeze_epochs, cfg.train.backbone_lr) == (2, cfg.train.lr / 8)
    side = -(-size // stride)
    assert side >= 8 and f"model.output_stride {stride}: an attention map of {side}×{side} cells" in cfg.chosen


@pytest.mark.parametrize(("size", "stride"), [(64, 8), (96, 8), (32, 8), (16, 8)])
def test_a_chosen_imagenet_backbone_on_small_images_keeps_its_finest_map(tmp_path, size, stride):
    cfg = auto(tmp_path, **{"data.image_size": size, "model.backbone": "efficientnet_lite0"})
    assert (cfg.model.pretrained, cfg.model.output_stride) == (True, stride)  # 8: its finest, even if < 8 cells


def test_a_key_given_a_value_keeps_it_and_the_others_follow_it(tmp_path):
    cfg = auto(tmp_path, **{"data.image_size": 128, "model.backbone": "seed_cnn", "train.freeze_epochs": 1})
    assert (cfg.model.pretrained, cfg.model.output_stride, cfg.train.freeze_epochs) == (False, 4, 1)
    assert not any(line.startswith(("model.backbone", "train.freeze_epochs")) for line in cfg.chosen)
    scratch = auto(
        tmp_path, **{"data.image_size": 128, "model.backbone": "efficientnet_lite0", "model.pretrained": False}
    )
    assert (scratch.model.output_stride, scratch.train.freeze_epochs, scratch.train.backbone_lr) == (16, 0, None)


def test_resnet_is_pretrained_only_with_a_weights_file(tmp_path):
    cfg = auto(tmp_path, **{"data.image_size": 64, "model.backbone": "resnet18"})
    assert (cfg.model.pretrained, cfg.model.output_stride) == (False, 8)  # from scratch: its own stride is 8
    weighted = auto(tmp_path, **{"data.image_size": 64, "model.backbone": "resnet18", "model.pretrained_weights": "w"})
    assert (weighted.model.pretrained, weighted.model.output_stride) == (True, 8)  # 64 px / 8: 8×8 cells
    with pytest.raises(PipelineError, match="pretrained_weights is only for resnet18 or vgg11_bn"):
        auto(tmp_path, **{"data.image_size": 128, "model.pretrained_weights": "w.pth"})
