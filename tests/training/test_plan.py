"""The training plan: the same params give small data smaller batches and more epochs, and leave
large data as the params say."""

import pytest
import torch

from pipeline import preprocess, train, validate
from pipeline.core.config import TrainConfig, load_config
from pipeline.model.network import AttentionCNN
from pipeline.training.distributed import Ranks
from pipeline.training.plan import plan_training
from pipeline.training.runtime import select_runtime
from pipeline.training.steps import activation_bytes, build_training, class_weights

DEFAULTS = load_config().train  # the project's params.yaml


def test_fashion_mnist_trains_as_the_params_say():
    plan = plan_training(DEFAULTS, 54_000)
    assert (plan.batch_size, plan.epochs, plan.lr_scale) == (DEFAULTS.batch_size, DEFAULTS.epochs, 1)
    assert not plan.reasons


def test_a_small_set_gets_smaller_batches_and_more_epochs():
    plan = plan_training(DEFAULTS, 1771)  # a small inspection set
    assert plan.batch_size == 32  # 1771 / 32 steps = 55 images, rounded down to a power of two
    assert plan.lr_scale == (32 / DEFAULTS.batch_size) ** 0.75 and "learning rates × 0.21" in plan.describe()
    assert plan.steps_per_epoch >= DEFAULTS.min_steps_per_epoch and plan.steps >= DEFAULTS.min_steps
    assert plan.epochs > DEFAULTS.epochs and len(plan.reasons) == 2 and "min_images 32000" in plan.describe()
    assert plan.epochs * 1771 >= DEFAULTS.min_images


def test_a_halved_batch_does_not_halve_the_run():
    """Under a step floor alone, 1,021 images got batch 16 and 16 epochs where 1,100 got batch 32 and
    29 (each epoch twice the steps): the image floor gives both about as many passes over their data."""
    fewer, more = plan_training(DEFAULTS, 1021), plan_training(DEFAULTS, 1100)
    assert (fewer.batch_size, more.batch_size) == (16, 32)
    assert fewer.epochs * 1021 >= DEFAULTS.min_images and more.epochs * 1100 >= DEFAULTS.min_images
    assert fewer.epochs >= more.epochs  # fewer images: at least as many epochs
    steps_only = plan_training(DEFAULTS.model_copy(update={"min_images": 0, "epochs": 1}), 1021)
    assert steps_only.epochs == 16 < fewer.epochs  # what the step floor alone gave


@pytest.mark.parametrize("images", [1, 7, 100, 1000, 10_000, 1_000_000])
def test_the_plan_holds_its_rules_at_any_size(images):
    plan = plan_training(DEFAULTS, images)
    assert 8 <= plan.batch_size <= DEFAULTS.batch_size and plan.batch_size & (plan.batch_size - 1) == 0
    assert plan.steps >= DEFAULTS.min_steps and plan.epochs >= DEFAULTS.epochs
    assert plan.epochs * images >= DEFAULTS.min_images
    assert plan.steps_per_epoch >= min(DEFAULTS.min_steps_per_epoch, -(-images // 8))


def test_the_batch_splits_over_the_processes():
    plan = plan_training(TrainConfig(batch_size=256, min_steps_per_epoch=32), 1000, Ranks(0, 0, 3))
    assert plan.batch_size % 3 == 0 and plan.batch_size <= 32


def test_a_batch_of_large_images_is_cut_to_what_memory_holds():
    gb, mb = 2**30, 2**20
    large = plan_training(DEFAULTS, 1_000_000, image_bytes=56 * mb, free_bytes=16 * gb)  # 300 px, seed CNN
    assert large.batch_size == 64  # 8 GB / (2 × 56 MB) = 73 images → 64
    assert "needs about 28.0 GB for its activations (56.0 MB an image)" in large.describe()
    assert large.lr_scale == (64 / DEFAULTS.batch_size) ** 0.75
    assert plan_training(DEFAULTS, 1_000_000, image_bytes=mb // 2, free_bytes=16 * gb).batch_size == 256  # 28 px
    assert plan_training(DEFAULTS, 1_000_000, image_bytes=4 * gb, free_bytes=gb).batch_size == 8  # never below 8
    shared = plan_training(DEFAULTS, 1_000_000, Ranks(0, 0, 2), image_bytes=56 * mb, free_bytes=16 * gb)
    assert shared.batch_size == 128  # each process holds its 64


def test_the_train_stage_measures_an_images_activations(project):
    cfg = load_config()
    runtime = select_runtime("cpu", "fp32")
    model = runtime.prepare(AttentionCNN(cfg.model, 1, 3, [0.5], [0.25]))
    small, large = (activation_bytes(model, 1, size, runtime) for size in (16, 64))
    assert 12 < large / small <= 16  # 16× the pixels: the maps grow with them, the head does not
    assert model.training  # the probe leaves the model as it was


def test_balanced_class_weights_undo_the_imbalance():
    labels = torch.tensor([0] * 70 + [1] * 30)
    weights = class_weights(labels, 3)
    assert torch.allclose(weights[:2] * torch.tensor([70.0, 30.0]), torch.tensor([50.0, 50.0]))
    assert weights[2] == 0  # no images: no weight
    assert torch.equal(class_weights(torch.arange(10) % 2, 2), torch.ones(2))  # balanced data: unchanged


def test_class_weights_come_from_the_training_and_validation_splits_together():
    """A balanced folder whose split by content fell unevenly (15 / 21 training images, 15 / 9
    validation) trains unweighed; an uneven one is weighed by its shares in both splits."""
    cfg = load_config(overrides={"model.widths": [4], "model.convs_per_block": 1, "model.attention_dim": 4})
    meta = {"channels": 1, "classes": ["a", "b"], "image_size": 16, "mean": [0.5], "std": [0.25]}
    runtime = select_runtime("cpu", "fp32")
    train_labels = torch.tensor([0] * 15 + [1] * 21)
    assert build_training(cfg, meta, runtime, train_labels).class_weights is not None  # the split alone: noise
    assert (
        build_training(cfg, meta, runtime, train_labels, val_labels=torch.tensor([0] * 15 + [1] * 9)).class_weights
        is None
    )
    uneven = build_training(cfg, meta, runtime, train_labels, val_labels=torch.tensor([0] * 5 + [1] * 9))
    torch.testing.assert_close(uneven.class_weights, class_weights(torch.tensor([0] * 20 + [1] * 30), 2))


def test_the_train_stage_follows_and_records_the_plan(project):
    import mlflow

    validate.run(project)
    preprocess.run(project)
    cfg = load_config(overrides={"train.min_steps": 30, "train.min_steps_per_epoch": 8, "train.batch_size": 64})
    result = train.run(cfg)
    assert result.metrics["batch_size"] == 8 and result.metrics["steps"] >= 30  # ~96 images: 96 / 8 = 12 → 8
    assert result.metrics["epochs"] == len(result.history) > cfg.train.epochs
    run = mlflow.get_run(result.run_id)
    assert run.data.params["plan.batch_size"] == "8" and "min_steps 30" in run.data.tags["plan"]
    peak = result.history["lr"].max()  # batch 64 → 8: onecycle's peak at lr × √(8/64)
    assert cfg.train.lr * 0.5 * (8 / 64) ** 0.5 < peak <= cfg.train.lr * (8 / 64) ** 0.5 + 1e-9


def test_the_time_left_is_the_remaining_epochs_at_the_mean_pace():
    plan = plan_training(DEFAULTS, 54_000)  # 18 epochs
    assert plan.time_left(2, [100.0, 80.0]) == ", about 24 min left"  # 16 × 90 s
    assert plan.time_left(17, [2.0] * 17) == ", about 2 s left"
    assert plan.time_left(17, [0.1] * 17) == ", about 1 s left"  # not "0 s" on tiny runs
    assert plan.time_left(18, [90.0] * 18) == ""
