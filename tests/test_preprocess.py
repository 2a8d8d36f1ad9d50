import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pipeline import preprocess, validate
from pipeline.core.config import load_config
from pipeline.data.split_rule import split_manifest
from pipeline.data.splits import load_split
from tests.dvc_repo import dvc, make_repo
from tests.synthetic import CLASSES, synthetic_image


def manifest(train_per_class: int, test_per_class: int = 0) -> pd.DataFrame:
    rows = [
        {"path": f"{split}/{label}/{i}.png", "split": split, "label": label, "sha256": f"{split}{label}{i}"}
        for split, count in (("train", train_per_class), ("test", test_per_class))
        for label in ("a", "b", "c")
        for i in range(count)
    ]
    return pd.DataFrame(rows)


def membership(splits) -> dict[str, str]:
    return {path: name for name, frame in splits.items() for path in frame["path"]}


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


def test_each_class_gives_about_its_fraction_to_val_and_test():
    splits = split_manifest(manifest(500), 0.2, 0.2, seed=0)
    for held, expected in ((splits.test, 100), (splits.val, 80)):  # 20 % of 500, then 20 % of the rest
        counts = held["label"].value_counts()
        assert set(counts.index) == {"a", "b", "c"} and all(abs(n - expected) < 30 for n in counts), counts.to_dict()


def test_a_growing_shrinking_or_reordered_folder_moves_no_image_between_splits():
    before = membership(split_manifest(manifest(200), 0.1, 0.2, seed=0))
    grown = membership(split_manifest(manifest(260).sample(frac=1, random_state=3), 0.1, 0.2, seed=0))
    shrunk = membership(split_manifest(manifest(150), 0.1, 0.2, seed=0))
    assert all(grown[path] == split for path, split in before.items())
    assert all(before[path] == split for path, split in shrunk.items())
    # what a draw over the whole folder (the rule before) does to the same growth: images move
    import sklearn.model_selection

    def drawn(frame):
        train, test = sklearn.model_selection.train_test_split(frame, test_size=0.2, random_state=0,
                                                               stratify=frame["label"])  # fmt: skip
        return set(test["path"])

    assert drawn(manifest(260)) - drawn(manifest(200)) & set(manifest(200)["path"])


def test_copies_of_one_image_share_a_split_and_every_class_gets_a_val_image():
    frame = manifest(30)
    frame.loc[frame["label"] == "a", "sha256"] = "same picture"  # 30 copies of one image
    splits = split_manifest(frame, 0.2, 0.2, seed=0)
    places = {name for name, held in splits.items() if (held["label"] == "a").any()}
    assert len(places) == 1
    small = split_manifest(manifest(3), 0.01, 0.01, seed=0)  # fractions too small for 3 images
    assert set(small.val["label"]) == {"a", "b", "c"} and set(small.test["label"]) == {"a", "b", "c"}


def test_writes_uint8_tensors_and_training_statistics(project):
    validate.run(project)
    meta = preprocess.run(project)
    train = load_split(project.paths.processed, "train")
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (1, 16, 16)
    counts = meta["counts"]
    assert counts["train"] + counts["val"] == 120 and counts["test"] == 30 and 10 <= counts["val"] <= 40
    assert meta["classes"] == ["bars", "columns", "squares"]
    expected_mean = train.images.float().div(255).mean().item()
    assert meta["mean"][0] == pytest.approx(expected_mean, rel=1e-4)
    assert json.loads((project.paths.processed / "meta.json").read_text()) == meta


def test_rgb_and_resize(project):
    cfg = load_config(overrides={"data.channels": 3, "data.image_size": 24})
    validate.run(cfg)
    preprocess.run(cfg)
    test = load_split(cfg.paths.processed, "test")
    assert test.images.shape == (30, 3, 24, 24)


def test_channels_auto_reads_grey_images_grey_and_colour_in_colour(project, dataset):
    """`data.channels: auto`: the synthetic grey images train on one channel; one colour photo among
    the training images makes it three, in colour (its red differs from its blue); `1` makes it grey."""
    cfg = load_config()
    assert cfg.data.channels == "auto"
    validate.run(cfg)
    assert preprocess.run(cfg)["channels"] == 1 and load_split(cfg.paths.processed, "test").images.shape[1] == 1
    photo = np.zeros((32, 32, 3), dtype=np.uint8)
    photo[..., 0], photo[..., 2] = 220, 30  # red, not grey
    Image.fromarray(photo).save(dataset / "train" / CLASSES[0] / "photo.png")
    validate.run(cfg)
    meta = preprocess.run(cfg)
    assert meta["channels"] == 3 and len(meta["mean"]) == 3
    images = torch.cat([load_split(cfg.paths.processed, name).images for name in ("train", "val")])
    reddest = images[images[:, 0].float().mean((1, 2)).argmax()]
    assert reddest[0].float().mean() > reddest[2].float().mean() + 100  # the photo, in colour
    grey = load_config(overrides={"data.channels": 1})
    assert preprocess.run(grey)["channels"] == 1


def chunk_files(folder) -> dict[int, int]:
    """inode -> bytes of the shard chunks under a processed folder (a kept chunk keeps its inode)."""
    return {path.stat().st_ino: path.stat().st_size for path in folder.glob("*/chunk-*.bin")}


def add_images(dataset, per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        for index in range(per_class):
            image = Image.fromarray(synthetic_image(label, 16, rng), mode="L")
            image.save(dataset / "train" / name / f"added-{seed}-{index}.png")


def contents(processed) -> dict:
    """Each split's images by manifest path, with its label."""
    splits = {name: load_split(processed, name, "memory") for name in ("train", "val", "test")}
    return {(name, path): (split.images[i], int(split.labels[i]))
            for name, split in splits.items() for i, path in enumerate(split.paths)}  # fmt: skip


def test_a_grown_folder_keeps_its_shards_and_decodes_only_the_new_images(project, dataset):
    validate.run(project)
    preprocess.run(project)
    before = chunk_files(project.paths.processed)
    add_images(dataset, 4, seed=1)  # 10 % more training images
    validate.run(project)
    grown = preprocess.run(project)
    after = chunk_files(project.paths.processed)
    assert set(before) <= set(after)  # not one old chunk written again
    written = sum(size for inode, size in after.items() if inode not in before)
    assert 0 < written <= 0.15 * sum(before.values())
    appended = contents(project.paths.processed)
    assert grown["counts"]["train"] + grown["counts"]["val"] == 132
    # the same as writing everything from scratch, statistics included
    shutil.rmtree(project.paths.processed)
    whole = preprocess.run(project)
    fresh = contents(project.paths.processed)
    assert appended.keys() == fresh.keys()
    assert all(torch.equal(appended[key][0], fresh[key][0]) and appended[key][1] == fresh[key][1] for key in fresh)
    assert grown["mean"] == pytest.approx(whole["mean"]) and grown["std"] == pytest.approx(whole["std"])


@pytest.mark.parametrize("change", ["removed", "resized"])
def test_a_removed_image_or_a_changed_recipe_writes_the_splits_again(project, dataset, change):
    validate.run(project)
    preprocess.run(project)
    before = chunk_files(project.paths.processed)
    add_images(dataset, 4, seed=1)
    cfg = project
    if change == "removed":
        next(iter(sorted((dataset / "train").rglob("0*.png")))).unlink()
    else:
        cfg = load_config(overrides={"data.image_size": 20})
    validate.run(cfg)
    preprocess.run(cfg)
    after = chunk_files(cfg.paths.processed)
    kept = set(before) & set(after)
    if change == "removed":  # only the split that lost an image is written again
        assert kept and len(kept) < len(before)
    else:
        assert not kept
    fresh_sizes = {key[1] for key in contents(cfg.paths.processed)}
    assert len(fresh_sizes) == sum(1 for _ in dataset.rglob("*.png"))


def file_bytes(folder) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_rewrite_that_changes_no_pixel_changes_no_byte(project):
    validate.run(project)
    preprocess.run(project)
    before, chunks = file_bytes(project.paths.processed), chunk_files(project.paths.processed)
    record = project.paths.preprocess_recipe
    written = json.loads(record.read_text())
    record.write_text(json.dumps({**written, "recipe": "decoding code of another version"}))
    preprocess.run(project)
    assert not set(chunks) & set(chunk_files(project.paths.processed))  # every split was written again
    assert file_bytes(project.paths.processed) == before  # to the same bytes: DVC sees no change, trains no more
    assert json.loads(record.read_text()) == written


def test_a_recipe_recorded_for_another_meta_json_keeps_no_shard(project, dataset):
    """A processed folder put back from elsewhere (`dvc checkout`, a copy) is not vouched for by the record."""
    validate.run(project)
    preprocess.run(project)
    before = chunk_files(project.paths.processed)
    meta = project.paths.processed / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "bit_depth": 12}))  # another run's meta.json
    add_images(dataset, 4, seed=1)
    validate.run(project)
    preprocess.run(project)
    assert not set(before) & set(chunk_files(project.paths.processed))


def test_dvc_repro_after_the_folder_grows_keeps_the_old_shards(tmp_path):
    repo = make_repo(tmp_path / "repo")
    dvc(repo, "repro", "preprocess")
    processed = repo / "data" / "processed"
    before = chunk_files(processed)
    add_images(repo / "data" / "images", 4, seed=1)  # 10 % more training images
    dvc(repo, "add", "-q", "data/images")
    output = dvc(repo, "repro", "preprocess")
    assert "Running stage 'preprocess'" in output
    after = chunk_files(processed)
    assert set(before) <= set(after), "DVC or the stage wrote an old shard again"
    assert 0 < sum(size for inode, size in after.items() if inode not in before) <= 0.15 * sum(before.values())
    assert "up to date" in dvc(repo, "status", "preprocess")
    assert len(contents(processed)) == 162
