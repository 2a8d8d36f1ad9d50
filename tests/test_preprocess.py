import json

import pandas as pd
import pytest
import torch

from pipeline import preprocess, validate
from pipeline.core.config import load_config
from pipeline.preprocess import split_manifest


def manifest(train_per_class: int, test_per_class: int = 0) -> pd.DataFrame:
    rows = [
        {"path": f"{split}/{label}/{i}.png", "split": split, "label": label}
        for split, count in (("train", train_per_class), ("test", test_per_class))
        for label in ("a", "b", "c")
        for i in range(count)
    ]
    return pd.DataFrame(rows)


def test_same_seed_gives_the_same_split_and_another_seed_another():
    frame = manifest(50, 10)
    first, again = split_manifest(frame, 0.2, 0.2, seed=1), split_manifest(frame, 0.2, 0.2, seed=1)
    other = split_manifest(frame, 0.2, 0.2, seed=2)
    assert list(first.val["path"]) == list(again.val["path"])
    assert list(first.val["path"]) != list(other.val["path"])


def test_no_image_in_two_splits_and_test_kept_as_given():
    splits = split_manifest(manifest(50, 10), 0.2, 0.2, seed=0)
    names = [set(frame["path"]) for _, frame in splits.items()]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
    assert sum(map(len, names)) == 180
    assert set(splits.test["split"]) == {"test"} and len(splits.test) == 30


def test_validation_split_is_stratified():
    splits = split_manifest(manifest(50), 0.2, 0.2, seed=0)
    assert splits.val["label"].value_counts().to_dict() == {"a": 8, "b": 8, "c": 8}
    assert splits.test["label"].value_counts().to_dict() == {"a": 10, "b": 10, "c": 10}


def test_writes_uint8_tensors_and_training_statistics(project):
    validate.run(project)
    meta = preprocess.run(project)
    train = torch.load(project.paths.processed / "train.pt", weights_only=True)
    assert train["images"].dtype == torch.uint8 and train["images"].shape[1:] == (1, 16, 16)
    assert meta["counts"] == {"train": 96, "val": 24, "test": 30}
    assert meta["classes"] == ["bars", "columns", "squares"]
    expected_mean = train["images"].float().div(255).mean().item()
    assert meta["mean"][0] == pytest.approx(expected_mean, rel=1e-4)
    assert json.loads((project.paths.processed / "meta.json").read_text()) == meta


def test_rgb_and_resize(project):
    cfg = load_config(overrides={"data.channels": 3, "data.image_size": 24})
    validate.run(cfg)
    preprocess.run(cfg)
    test = torch.load(cfg.paths.processed / "test.pt", weights_only=True)
    assert test["images"].shape == (30, 3, 24, 24)
