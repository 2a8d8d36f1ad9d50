"""What changed between two data versions: each kind of change planted in a small generated dataset."""

import shutil

import pandas as pd
import pytest
from PIL import Image

from pipeline.data import image_folder
from pipeline.data.manifest_diff import diff


@pytest.fixture
def versions(dataset, tmp_path):
    """The dataset's manifest, and the manifest after one change of each kind in a copy of it."""
    old = image_folder.scan(dataset).files
    changed = shutil.copytree(dataset, tmp_path / "v2")
    for index in range(3):  # +3 squares
        Image.new("L", (16, 16), 40 + index).save(changed / "train" / "squares" / f"new{index}.png")
    (changed / "test" / "bars" / "000.png").unlink()  # −1 bars
    Image.new("L", (16, 16), 200).save(changed / "train" / "columns" / "005.png")  # new bytes, same path
    (changed / "train" / "bars" / "007.png").rename(changed / "train" / "columns" / "bars-007.png")  # relabelled
    (changed / "train" / "squares" / "001.png").rename(changed / "test" / "squares" / "moved-001.png")  # moved
    return old, image_folder.scan(changed).files


def test_each_kind_of_change_is_counted_under_its_class(versions):
    old, new = versions
    found = diff(old, new)
    nonzero = {(label, kind): int(n) for (label, kind), n in found.counts.stack().items() if n}
    assert nonzero == {
        ("squares", "added"): 3, ("bars", "removed"): 1, ("columns", "changed"): 1,
        ("columns", "relabelled"): 1, ("squares", "moved"): 1,
    }  # fmt: skip
    assert found.relabelled == [("train/columns/bars-007.png", "bars", "columns")]
    assert found.summary() == "+3 squares, −1 bars, 1 changed, 1 relabelled, 1 moved between splits"
    assert (found.old_images, found.new_images) == (150, 152)
    assert "| squares | 3 | 0 | 0 | 0 | 1 |" in found.markdown()


def test_the_same_data_under_any_row_order_is_no_change(versions):
    old, _ = versions
    found = diff(old, old.sample(frac=1, random_state=0))
    assert found.unchanged and found.summary() == "no change" and found.as_dict()["per_class"] == {}


def test_duplicate_bytes_pair_one_to_one(versions):
    old, _ = versions
    twin = old.iloc[[0]].assign(path="train/bars/twin.png")
    found = diff(old, pd.concat([old, twin]))  # a second copy of an existing image, under a new name
    assert found.summary() == "+1 bars"
