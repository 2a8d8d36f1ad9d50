"""Pretrained backbones: real ImageNet weights from an installed package or a user's file, never a
download; gray images on RGB stems; fine-tuning with a frozen backbone and its own learning rate."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
import torch
import torchvision
import yaml
from PIL import Image
from skimage import data
from timm.data import ImageNetInfo

from pipeline import evaluate, preprocess, train, validate
from pipeline.core.config import ModelConfig, TrainConfig, load_config
from pipeline.core.errors import PipelineError
from pipeline.data.splits import TensorSplit
from pipeline.model.backbones import IMAGENET_MEAN, IMAGENET_STD, efficientnet_lite0_imagenet
from pipeline.model.model_file import load_model
from pipeline.model.network import AttentionCNN
from pipeline.training.runtime import select_runtime
from pipeline.training.steps import build_training, make_optimizer, train_epoch


def imagenet_input(photo: np.ndarray) -> torch.Tensor:
    pixels = torch.from_numpy(np.array(Image.fromarray(photo).resize((224, 224), Image.BICUBIC)))
    images = pixels.permute(2, 0, 1)[None].float() / 255
    return (images - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


@pytest.mark.parametrize(("photo", "label"), [("chelsea", "Egyptian cat"), ("coffee", "espresso")])
def test_efficientnet_lite0_weights_are_real_imagenet_weights(photo, label):
    net = efficientnet_lite0_imagenet().eval()
    with torch.no_grad():
        top3 = net(imagenet_input(getattr(data, photo)())).topk(3).indices[0].tolist()
    assert label in [ImageNetInfo().index_to_description(index) for index in top3]


def test_without_pretraining_the_same_photo_is_not_recognised():
    torch.manual_seed(0)
    net = efficientnet_lite0_imagenet(pretrained=False).eval()
    with torch.no_grad():
        top3 = net(imagenet_input(data.chelsea())).topk(3).indices[0].tolist()
    assert "Egyptian cat" not in [ImageNetInfo().index_to_description(index) for index in top3]


def pretrained_cfg(**values) -> ModelConfig:
    values = {"output_stride": None, **values}  # the backbone's own stride (the default, 4, is seed_cnn's)
    return ModelConfig(
        backbone="efficientnet_lite0", pretrained=True, attention="soft", attention_dim=16, dropout=0.0, **values
    )


def test_attention_head_sits_on_the_pretrained_feature_map_of_gray_images():
    model = AttentionCNN(pretrained_cfg(), 1, 5, pretrained=True).eval()
    reference = efficientnet_lite0_imagenet()
    torch.testing.assert_close(model.features.net.conv_stem.weight, reference.conv_stem.weight)
    gray = torch.randint(0, 256, (2, 1, 96, 96), dtype=torch.uint8)
    out = model(gray)
    assert out.logits.shape == (2, 5) and out.attention.shape == (2, 3, 3)
    torch.testing.assert_close(out.attention.flatten(1).sum(1), torch.ones(2))
    torch.testing.assert_close(model(gray.expand(-1, 3, -1, -1)).logits, out.logits)  # gray = RGB with R=G=B


def test_a_saved_pretrained_model_rebuilds_without_the_weights_source():
    trained = AttentionCNN(pretrained_cfg(), 3, 4, pretrained=True)
    rebuilt = AttentionCNN(pretrained_cfg(), 3, 4)
    assert not torch.equal(rebuilt.features.net.conv_stem.weight, trained.features.net.conv_stem.weight)
    rebuilt.load_state_dict(trained.state_dict())
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    torch.testing.assert_close(rebuilt.eval()(images).logits, trained.eval()(images).logits)


def test_torchvision_backbones_load_a_users_weights_file(tmp_path):
    torch.manual_seed(1)
    file = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), file)
    cfg = ModelConfig(
        backbone="resnet18", pretrained=True, pretrained_weights=str(file), output_stride=None, attention="soft"
    )
    model = AttentionCNN(cfg, 1, 3, pretrained=True)
    torch.testing.assert_close(model.features[0].weight, torch.load(file, weights_only=True)["conv1.weight"])
    assert model(torch.zeros((1, 1, 64, 64), dtype=torch.uint8)).attention.shape == (1, 2, 2)


def test_a_missing_or_wrong_weights_file_is_named(tmp_path):
    missing = ModelConfig(
        backbone="resnet18",
        pretrained=True,
        pretrained_weights=str(tmp_path / "none.pth"),
        output_stride=None,
        attention="soft",
    )
    with pytest.raises(PipelineError, match=r"model.pretrained_weights: .*none.pth does not exist; download https://"):
        AttentionCNN(missing, 3, 3, pretrained=True)
    other = tmp_path / "vgg.pth"
    torch.save(torchvision.models.vgg11_bn().features.state_dict(), other)
    wrong = ModelConfig(
        backbone="resnet18", pretrained=True, pretrained_weights=str(other), output_stride=None, attention="soft"
    )
    with pytest.raises(PipelineError, match="holds no resnet18 weights"):
        AttentionCNN(wrong, 3, 3, pretrained=True)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"backbone": "seed_cnn", "pretrained": True}, "seed_cnn has no pretrained weights"),
        ({"backbone": "vgg11_bn", "pretrained": True}, "cannot download vgg11_bn's ImageNet weights offline"),
        ({"pretrained_weights": "w.pth"}, "only for resnet18 or vgg11_bn with pretrained: true"),
    ],
)
def test_pretraining_settings_that_cannot_work_are_refused(project, model, message):
    with pytest.raises(PipelineError, match=f"'model': .*{message}"):
        load_config(overrides={f"model.{key}": value for key, value in model.items()})


def tiny_training(train: TrainConfig):
    cfg = load_config(overrides={"model.widths": [4, 8], "model.convs_per_block": 1, "model.attention_dim": 4})
    cfg = cfg.model_copy(update={"train": train})
    meta = {"channels": 1, "classes": ["a", "b"], "image_size": 28, "mean": [0.5], "std": [0.25]}
    runtime = select_runtime("cpu", "fp32")
    return build_training(cfg, meta, runtime, torch.arange(64) % 2), runtime


def test_frozen_epochs_train_the_head_only_then_the_backbone_learns(project):
    train = TrainConfig(
        epochs=2, batch_size=16, freeze_epochs=1, backbone_lr=None, augment={"hflip": False, "max_shift": 0}
    )
    training, runtime = tiny_training(train)
    data_split = TensorSplit(torch.randint(0, 256, (64, 1, 16, 16), dtype=torch.uint8), torch.randint(0, 2, (64,)))
    features = {k: v.clone() for k, v in training.model.features.state_dict().items()}
    head = training.model.classifier.weight.clone()
    train_epoch(training, data_split, train, runtime, epoch=1)
    for name, tensor in training.model.features.state_dict().items():
        assert torch.equal(tensor, features[name]), name  # weights and batch-norm statistics
    assert not torch.equal(training.model.classifier.weight, head)
    train_epoch(training, data_split, train, runtime, epoch=2)
    assert not torch.equal(training.model.features[0].weight, features["0.weight"])


def test_the_backbone_gets_its_own_learning_rate(project):
    model = AttentionCNN(
        ModelConfig(
            backbone="seed_cnn", pretrained=False, widths=[4], attention="soft", attention_dim=4, output_stride=None
        ),
        1,
        2,
    )
    optimizer = make_optimizer(model, TrainConfig(lr=0.01, backbone_lr=0.001))
    head, backbone = optimizer.param_groups
    assert (head["lr"], backbone["lr"]) == (0.01, 0.001)
    assert set(backbone["params"]) == set(model.features.parameters())
    assert len(head["params"]) + len(backbone["params"]) == len(list(model.parameters()))


def test_pretrained_true_fine_tunes_the_installed_imagenet_weights(project):
    params = yaml.safe_load((project.root / "params.yaml").read_text())
    params["data"]["image_size"] = 128
    params["model"] = {"backbone": "auto", "pretrained": True, "output_stride": "auto"}
    params["train"].update(epochs=3, min_steps=0, min_images=0)
    params["train"].update(freeze_epochs="auto", backbone_lr="auto")  # 2 frozen epochs, 1 not
    params["evaluate"].update(faithfulness_images=0, overlay_images=1)  # their checks are tested on the seed CNN
    (project.root / "params.yaml").write_text(yaml.safe_dump(params))
    cfg = load_config()
    validate.run(cfg)
    preprocess.run(cfg)
    result = train.run(cfg)
    evaluate.run(cfg)
    model, info = load_model(cfg.paths.model_file)
    assert info.model_config["backbone"] == "efficientnet_lite0" and info.model_config["pretrained"]
    torch.testing.assert_close(model.mean.flatten(), torch.tensor(IMAGENET_MEAN) * 255)
    assert model(torch.zeros(1, 1, 128, 128, dtype=torch.uint8)).attention.shape[-2:] == (8, 8)  # stride 16
    assert json.loads((cfg.paths.metrics / "eval.json").read_text())["accuracy"] >= 0
    run = mlflow.get_run(result.run_id).data
    assert (run.params["model.backbone"], run.params["train.freeze_epochs"]) == ("efficientnet_lite0", "2")
    assert run.params["train.backbone_lr"] == str(cfg.train.lr / 8) and "ImageNet" in run.tags["auto"]


@pytest.mark.parametrize(
    ("model", "size", "side"),
    [
        ({"backbone": "seed_cnn", "widths": [8, 16, 32], "output_stride": None}, 28, 3),  # its own stride: 8
        ({"backbone": "seed_cnn", "widths": [8, 16, 32], "output_stride": 4}, 28, 7),
        ({"backbone": "seed_cnn", "widths": [8, 16, 32], "output_stride": 1}, 28, 28),
        ({"backbone": "resnet18", "output_stride": None}, 32, 4),
        ({"backbone": "resnet18", "output_stride": 2}, 32, 16),
        ({"backbone": "vgg11_bn", "output_stride": 8}, 64, 8),
        ({"backbone": "efficientnet_lite0", "output_stride": 16}, 64, 4),
    ],
)
def test_output_stride_keeps_a_finer_attention_map(model, size, side):
    net = AttentionCNN(ModelConfig(**{"pretrained": False, "attention": "soft", **model}), 1, 3).eval()
    with torch.no_grad():
        attention = net(torch.zeros(2, 1, size, size)).attention
    assert attention.shape == (2, side, side)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"backbone": "seed_cnn", "widths": [8, 16], "output_stride": 8}, "downsamples 4× at most"),
        ({"backbone": "efficientnet_lite0", "output_stride": 4}, "keeps 8, 16, 32"),
        ({"backbone": "resnet18", "pretrained": True, "pretrained_weights": "w.pth", "output_stride": 2}, "too fine"),
    ],
)
def test_an_output_stride_a_backbone_cannot_keep_is_one_line(model, message):
    with pytest.raises(PipelineError, match=message):
        AttentionCNN(ModelConfig(**{"pretrained": False, "attention": "soft", **model}), 1, 3)
