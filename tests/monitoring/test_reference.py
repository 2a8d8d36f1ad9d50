"""The monitoring reference: the validation and test splits, none of the training split, at most REFERENCE_IMAGES."""

import torch

from pipeline import monitor, preprocess, validate
from pipeline.data.splits import load_split


def test_the_reference_is_the_validation_and_test_images_drawn_down_to_its_cap(project, monkeypatch):
    validate.run(project)
    preprocess.run(project)
    splits = {name: load_split(project.paths.processed, name, "memory").images for name in ("train", "val", "test")}
    whole = monitor.reference_images(project)
    assert torch.equal(whole, torch.cat([splits["val"], splits["test"]]))
    monkeypatch.setattr(monitor, "REFERENCE_IMAGES", 20)
    drawn = monitor.reference_images(project)
    held = {bytes(image.numpy()) for image in torch.cat([splits["val"], splits["test"]])}
    assert 18 < len(drawn) <= 20 and all(bytes(image.numpy()) in held for image in drawn)
    assert not {bytes(image.numpy()) for image in drawn} & {bytes(image.numpy()) for image in splits["train"]}
    assert torch.equal(drawn, monitor.reference_images(project))  # seeded: the same every run


def test_the_reference_key_changes_with_the_model_version_and_any_pixel():
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    key = monitor.reference_key("classifier", "3", images)
    assert key == monitor.reference_key("classifier", "3", images.clone())
    assert key != monitor.reference_key("classifier", "4", images)
    assert key != monitor.reference_key("other", "3", images)
    images[2, 0, 5, 1] = 1
    assert key != monitor.reference_key("classifier", "3", images)
