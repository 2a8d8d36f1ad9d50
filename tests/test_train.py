import json

import mlflow
import pytest
import torch

from pipeline import preprocess, train, validate
from pipeline.config import AugmentConfig, load_config


def test_augment_flips_whole_images_and_keeps_dtype():
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    out = train.augment(images, AugmentConfig(hflip=True, max_shift=0), torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == images.shape
    same = (out == images).flatten(1).all(1)
    flipped = (out == images.flip(3)).flatten(1).all(1)
    assert (same | flipped).all() and same.any() and flipped.any()


def test_augment_shifts_by_at_most_max_shift():
    images = torch.zeros((32, 1, 10, 10), dtype=torch.uint8)
    images[:, :, 4, 4] = 255
    out = train.augment(images, AugmentConfig(hflip=False, max_shift=2), torch.Generator().manual_seed(0))
    rows, cols = (out[:, 0] == 255).nonzero()[:, 1:].T
    assert ((rows - 4).abs() <= 2).all() and ((cols - 4).abs() <= 2).all()
    assert len(rows) == 32 and ((rows != 4) | (cols != 4)).any()


@pytest.fixture
def prepared(project):
    validate.run(project)
    preprocess.run(project)
    return project


def test_training_writes_model_metrics_and_logs_one_mlflow_run(prepared):
    cfg = load_config(overrides={"train.epochs": 2})
    result = train.run(cfg)
    assert cfg.paths.model_file.is_file() and not cfg.paths.checkpoint.exists()
    metrics = json.loads((cfg.paths.metrics / "train.json").read_text())
    assert metrics["epochs"] == 2 and 0 <= metrics["val_accuracy"] <= 1
    assert list(result.history["epoch"]) == [1, 2]
    run = mlflow.get_run(result.run_id)
    assert run.data.params["train.epochs"] == "2"
    assert {"data_version", "git_commit"} <= set(run.data.tags)
    history = mlflow.MlflowClient().get_metric_history(result.run_id, "val_accuracy")
    assert [m.step for m in history] == [1, 2]


def test_interrupted_training_resumes_from_its_checkpoint(prepared, monkeypatch):
    cfg = load_config(overrides={"train.epochs": 2})
    uninterrupted = train.run(cfg)
    reference = torch.load(cfg.paths.model_file, weights_only=True)["state_dict"]

    real_epoch = train.train_epoch

    def crash_in_epoch_two(*args, **kwargs):
        if args[-1] == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    cfg.paths.model_file.unlink()
    monkeypatch.setattr(train, "train_epoch", crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg)
    assert cfg.paths.checkpoint.is_file() and not cfg.paths.model_file.exists()
    crashed_run = torch.load(cfg.paths.checkpoint, weights_only=True)["run_id"]
    monkeypatch.setattr(train, "train_epoch", real_epoch)

    resumed = train.run(cfg)
    assert list(resumed.history["epoch"]) == [1, 2]
    assert resumed.run_id == crashed_run != uninterrupted.run_id
    assert mlflow.get_run(resumed.run_id).info.status == "FINISHED"
    weights = torch.load(cfg.paths.model_file, weights_only=True)["state_dict"]
    for name, tensor in reference.items():
        torch.testing.assert_close(weights[name], tensor, msg=name)


def test_checkpoint_of_other_settings_is_not_resumed(prepared):
    cfg = load_config(overrides={"train.epochs": 1})
    cfg.paths.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"fingerprint": "other", "epoch": 5}, cfg.paths.checkpoint)
    result = train.run(cfg)
    assert list(result.history["epoch"]) == [1]


def test_corrupt_checkpoint_starts_over(prepared):
    cfg = load_config(overrides={"train.epochs": 1})
    cfg.paths.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    cfg.paths.checkpoint.write_bytes(b"half a file")
    assert list(train.run(cfg).history["epoch"]) == [1]
