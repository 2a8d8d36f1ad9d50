import pytest
import torch
from torch import nn

from pipeline.core.config import ModelConfig
from pipeline.model.backbones import seed_cnn
from pipeline.model.network import AttentionCNN, SoftAttentionPool


def make(attention="soft", backbone="seed_cnn", channels=1, classes=4, heads=1):
    cfg = ModelConfig(  # each backbone at its own stride
        backbone=backbone,
        pretrained=False,
        widths=[8, 16],
        attention=attention,
        attention_dim=8,
        attention_heads=heads,
        dropout=0.0,
        output_stride=None,
    )
    return AttentionCNN(cfg, channels, classes)


@pytest.mark.parametrize(
    ("backbone", "channels", "size", "grid"),
    [
        ("seed_cnn", 1, 28, 7),
        ("seed_cnn", 3, 32, 8),
        ("resnet18", 1, 28, 4),
        ("vgg11_bn", 1, 64, 2),
        ("efficientnet_lite0", 3, 64, 2),
    ],  # fmt: skip
)
def test_shapes(backbone, channels, size, grid):
    model = make(backbone=backbone, channels=channels).eval()
    out = model(torch.randint(0, 256, (5, channels, size, size), dtype=torch.uint8))
    assert out.logits.shape == (5, 4)
    assert out.attention.shape == (5, grid, grid)


@pytest.mark.parametrize(("attention", "heads"), [("soft", 1), ("none", 1), ("gated", 1), ("soft", 3)])
def test_attention_sums_to_one_over_all_positions_per_image(attention, heads):
    out = make(attention, heads=heads).eval()(torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8))
    sums = out.attention.flatten(1).sum(dim=1)
    torch.testing.assert_close(sums, torch.ones(6))
    assert (out.attention >= 0).all()


def test_softmax_is_over_all_positions_not_one_axis():
    pool = SoftAttentionPool(channels=4, attention_dim=3)
    features = torch.randn(2, 4, 5, 6)
    pooled, alpha = pool(features)
    # a per-row (one spatial axis) softmax would make every row sum to 1; the design does not
    assert not torch.allclose(alpha.sum(dim=2), torch.ones(2, 5))
    expected = (alpha.view(2, 1, 30) * features.flatten(2)).sum(dim=2)
    torch.testing.assert_close(pooled, expected)


def test_heads_pool_their_own_maps_and_show_their_mean():
    pool = SoftAttentionPool(channels=4, attention_dim=3, heads=2)
    features = torch.randn(2, 4, 5, 6)
    pooled, shown = pool(features)
    positions = features.flatten(2).transpose(1, 2)
    alpha = torch.softmax(pool.score(torch.tanh(pool.project(positions))), dim=1)  # 2×30×heads
    assert not torch.allclose(alpha[..., 0], alpha[..., 1])  # two different maps
    expected = torch.cat([(alpha[..., k : k + 1] * positions).sum(1) for k in range(2)], dim=1)
    torch.testing.assert_close(pooled, expected)
    torch.testing.assert_close(shown, alpha.mean(2).view(2, 5, 6))
    assert make(heads=3).classifier.in_features == 3 * 16


def test_head_maps_are_each_heads_own_map_whose_mean_is_shown():
    model = make("gated", heads=3).eval()
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    with torch.no_grad():
        maps, shown = model.head_maps(images), model(images).attention
    assert maps.shape == (4, 3, 7, 7)
    torch.testing.assert_close(maps.flatten(2).sum(2), torch.ones(4, 3))  # each head: a softmax over all positions
    assert not torch.allclose(maps[:, 0], maps[:, 1])
    torch.testing.assert_close(maps.mean(1), shown)
    assert make("soft", heads=1).head_maps(images) is None  # one map: nothing more to show
    assert make("none").head_maps(images) is None


def test_the_gate_can_silence_a_position():
    pool = SoftAttentionPool(channels=1, attention_dim=1, gated=True)
    with torch.no_grad():
        pool.project.weight.fill_(1.0)
        pool.project.bias.zero_()
        pool.score.weight.fill_(10.0)
        pool.gate.weight.fill_(-20.0)  # the gate closes for large features
        pool.gate.bias.fill_(10.0)
    features = torch.zeros(1, 1, 3, 3)
    features[0, 0, 0, 0] = 0.4  # tanh favours both; the gate only the smaller
    features[0, 0, 2, 1] = 5.0
    _, alpha = pool(features)
    assert alpha[0].argmax().item() == 0
    ungated = SoftAttentionPool(channels=1, attention_dim=1)
    ungated.load_state_dict({k: v for k, v in pool.state_dict().items() if not k.startswith("gate")})
    assert ungated(features)[1][0].argmax().item() == 2 * 3 + 1


def test_heads_need_attention():
    with pytest.raises(ValueError, match="attention_heads"):
        ModelConfig(attention="none", attention_heads=2)


def test_attention_follows_the_scores():
    pool = SoftAttentionPool(channels=1, attention_dim=1)
    with torch.no_grad():
        pool.project.weight.fill_(1.0)
        pool.project.bias.zero_()
        pool.score.weight.fill_(10.0)
    features = torch.zeros(1, 1, 3, 3)
    features[0, 0, 2, 1] = 5.0
    _, alpha = pool(features)
    assert alpha[0].argmax().item() == 2 * 3 + 1


@pytest.mark.parametrize(("attention", "heads"), [("soft", 1), ("none", 1), ("gated", 2)])
def test_every_parameter_gets_a_gradient(attention, heads):
    model = make(attention, heads=heads).train()
    out = model(torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8))
    nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2, 3])).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_one_batch_can_be_overfit():
    torch.manual_seed(0)
    model = make().train()
    images = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8)
    labels = torch.arange(16) % 4
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(images).logits, labels)
        loss.backward()
        optimizer.step()
    model.eval()
    assert (model(images).logits.argmax(1) == labels).all()
    assert loss.item() < 0.1


def test_normalisation_uses_the_given_statistics():
    cfg = ModelConfig(
        backbone="seed_cnn", pretrained=False, widths=[4], attention="soft", attention_dim=2, output_stride=None
    )
    model = AttentionCNN(cfg, 1, 2, mean=[0.5], std=[0.25])
    assert model.mean.item() == pytest.approx(127.5)
    assert model.std.item() == pytest.approx(63.75)


def test_pooling_before_relu_computes_conv_bn_relu_maxpool():
    torch.manual_seed(0)
    blocks = seed_cnn(1, [8, 16]).eval()
    images = torch.randn(3, 1, 28, 28)
    expected = images
    for conv, norm, pool, _ in zip(*[iter(blocks)] * 4, strict=True):
        assert isinstance(pool, nn.MaxPool2d)
        expected = pool(torch.relu(norm(conv(expected))))
    torch.testing.assert_close(blocks(images), expected)


@pytest.mark.parametrize(
    ("backbone", "channels", "size", "folds"),
    [
        ("seed_cnn", 1, 28, "all"),
        ("resnet18", 1, 32, "some"),  # the stem's; a residual block's are attributes, not a sequence
        ("vgg11_bn", 3, 32, "all"),
        ("efficientnet_lite0", 3, 64, "none"),  # timm's batch norms carry their activation: left alone
    ],
)
def test_folding_batch_norms_keeps_what_the_model_computes(backbone, channels, size, folds):
    torch.manual_seed(0)
    model = make(backbone=backbone, channels=channels)
    images = torch.randint(0, 256, (8, channels, size, size), dtype=torch.uint8)
    with torch.no_grad():
        for _ in range(3):  # running statistics far from the initial 0 and 1
            model(images)
    model.eval()
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        before = model(images)
        after = model.fold_batch_norms()(images)
    torch.testing.assert_close(after.logits, before.logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(after.attention, before.attention, rtol=1e-4, atol=1e-5)
    left = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert {"all": left == 0, "some": 0 < left < norms, "none": left == norms}[folds]


def test_folding_uses_the_running_statistics_not_a_batchs():
    torch.manual_seed(0)
    model = make()
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    with torch.no_grad():
        model(images)  # running statistics: a tenth of the way from 0 and 1 to this batch's
        in_training = model(images).logits  # this batch's own statistics
        model.eval()
        scored = model(images).logits
        folded = model.fold_batch_norms()(images).logits
    torch.testing.assert_close(folded, scored, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(folded, in_training, atol=1e-2)
