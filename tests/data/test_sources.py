import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError
from pipeline.data import fashion_mnist, image_folder, sources
from tests.synthetic import PROJECT

FASHION_MNIST = PROJECT / "data" / "fashion-mnist"


def test_folder_with_splits_keeps_its_splits(dataset):
    scan = image_folder.scan(dataset)
    assert len(scan.files) == 150 and set(scan.files["split"]) == {"train", "test"}
    assert set(scan.files["label"]) == {"bars", "columns", "squares"}
    assert "test/squares/009.png" in set(scan.files["path"]) and scan.files["decodable"].all()


def test_folder_without_splits_is_all_train(dataset):
    scan = image_folder.scan(dataset / "train")
    assert set(scan.files["split"]) == {"train"} and len(scan.files) == 120
    assert "bars/000.png" in set(scan.files["path"])


def test_hidden_and_system_files_are_not_read_and_a_link_is_read_as_its_file(dataset, tmp_path):
    (dataset / "train" / "bars" / ".DS_Store").write_bytes(b"x")
    (dataset / "train" / "bars" / "Thumbs.db").write_bytes(b"x")
    elsewhere = tmp_path / "elsewhere.png"
    shutil.copy(dataset / "test" / "bars" / "000.png", elsewhere)
    (dataset / "test" / "bars" / "000.png").unlink()
    os.symlink(elsewhere, dataset / "test" / "bars" / "link.png")
    os.symlink(tmp_path / "gone.png", dataset / "test" / "bars" / "broken.png")
    (dataset / "test" / "bars" / "empty.png").write_bytes(b"")
    (dataset / "README.md").write_text("my cells")
    shutil.copy(elsewhere, dataset / "train" / "stray.png")  # beside the class folders: no class
    scan = image_folder.scan(dataset)
    assert scan.ignored == ["README.md", "train/stray.png", "train/bars/.DS_Store", "train/bars/Thumbs.db"]
    files = scan.files.set_index("path")
    assert files.loc["test/bars/link.png", "decodable"] and files.loc["test/bars/link.png", "width"] == 16
    assert not files.loc["test/bars/broken.png", "decodable"]  # named by the decoding rule, not skipped
    assert "No such file" in files.loc["test/bars/broken.png", "error"]
    assert files.loc["test/bars/empty.png", "error"] == "empty file (0 bytes)"


def test_a_folder_dvc_keeps_as_links_into_its_cache_is_read_whole(dataset, tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(dataset, root / "images")
    for args in (["init", "--no-scm", "-q"], ["config", "core.analytics", "false"],
                 ["config", "cache.type", "symlink"], ["add", "-q", "images"]):  # fmt: skip
        subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, check=True, capture_output=True)
    assert (root / "images" / "train" / "bars" / "000.png").is_symlink()
    scan = image_folder.scan(root / "images")
    assert len(scan.files) == 150 and scan.files["decodable"].all() and not scan.ignored


def test_images_load_in_manifest_order_resized(dataset):
    paths = ["test/bars/001.png", "train/columns/000.png", "train/bars/003.png"]
    images = image_folder.load(dataset, paths, size=8, channels=3)
    assert images.shape == (3, 3, 8, 8) and images.dtype == np.uint8
    first = image_folder.load(dataset, paths[:1], size=8, channels=3)
    assert np.array_equal(images[:1], first)


def test_reading_goes_parallel_for_many_or_large_files_within_the_memory_room():
    plan, gb, px = image_folder.plan_workers, 2**30, 2**26  # px: validate.max_pixels' default
    assert plan(150, 1_000_000, 8, 16 * gb, px) == (1, 150)  # a small folder: one process
    assert plan(40, 230 * 2**20, 8, 16 * gb, px) == (8, 2)  # forty 20-Mpx photos: every core, small tasks
    assert plan(40, 230 * 2**20, 2, 16 * gb, px) == (2, 5)
    assert plan(2600, 40 * 2**20, 2, 16 * gb, px) == (2, 325)  # many small files, as before: every core
    assert plan(1_000_000, 50 * gb, 64, 16 * gb, px) == (8, 2000)  # at most 8, tasks of at most 2,000
    assert plan(40, 230 * 2**20, 8, gb, px) == (2, 5)  # 1 GB left: two 64-Mpx decodes at a time
    assert plan(40, 230 * 2**20, 8, 100 * 2**20, px)[0] == 1


def test_parallel_reading_gives_what_one_process_gives(dataset, monkeypatch):
    alone = image_folder.scan(dataset)
    arrays = image_folder.load(dataset, list(alone.files["path"]), 12, 3)
    monkeypatch.setattr(image_folder, "PARALLEL_BYTES", 0)  # 150 small files, read as if they were large
    assert image_folder._plan(sorted(dataset.rglob("*.png")), 2**26)[0] == min(8, os.cpu_count())
    parallel = image_folder.scan(dataset)
    assert parallel.files.equals(alone.files)
    assert np.array_equal(image_folder.load(dataset, list(alone.files["path"]), 12, 3), arrays)


def test_missing_folder_names_data_path(tmp_path):
    with pytest.raises(PipelineError, match="data.path: .* is not a folder"):
        image_folder.scan(tmp_path / "nowhere")


def test_missing_fashion_mnist_says_what_to_install(tmp_path):
    with pytest.raises(PipelineError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist.scan(tmp_path)


def test_debian_fashion_mnist_reads_as_70000_labelled_images():
    train_images, train_labels = fashion_mnist.read_split(FASHION_MNIST, "train")
    test_images, _ = fashion_mnist.read_split(FASHION_MNIST, "test")
    assert train_images.shape == (60000, 28, 28) and test_images.shape == (10000, 28, 28)
    assert np.bincount(train_labels).tolist() == [6000] * len(fashion_mnist.CLASSES)
    assert 0.25 < train_images.mean() / 255 < 0.32  # the published mean is 0.286


def test_fashion_mnist_manifest_names_file_and_index_and_loads_back():
    scan = fashion_mnist.scan(FASHION_MNIST)
    assert len(scan.files) == 70000 and set(scan.files["format"]) == {"IDX"}
    row = scan.files.iloc[60003]
    assert row["path"] == "t10k-images-idx3-ubyte.gz#00003" and row["split"] == "test"
    images, labels = fashion_mnist.read_split(FASHION_MNIST, "test")
    assert row["label"] == fashion_mnist.CLASSES[labels[3]]
    loaded = fashion_mnist.load(FASHION_MNIST, [row["path"], "train-images-idx3-ubyte.gz#00000"], 28, 1)
    assert np.array_equal(loaded[0, 0], images[3])
    assert np.array_equal(loaded[1, 0], fashion_mnist.read_split(FASHION_MNIST, "train")[0][0])


def test_fashion_mnist_resizes_and_repeats_channels():
    loaded = fashion_mnist.load(FASHION_MNIST, ["t10k-images-idx3-ubyte.gz#00000"], 56, 3)
    assert loaded.shape == (1, 3, 56, 56) and np.array_equal(loaded[0, 0], loaded[0, 2])
    original = fashion_mnist.read_split(FASHION_MNIST, "test")[0][0].astype(float)
    assert np.abs(loaded[0, 0].reshape(28, 2, 28, 2).mean((1, 3)) - original).mean() < 8


def test_truncated_idx_is_refused(tmp_path):
    (tmp_path / "bad.idx").write_bytes(b"\0\0\x08\x01\0\0\0\x10abc")
    with pytest.raises(PipelineError, match="truncated"):
        fashion_mnist.read_idx(tmp_path / "bad.idx")


def test_source_is_chosen_by_config(project, dataset):
    assert len(sources.scan(project).files) == 150
    cfg = load_config(overrides={"data.source": "fashion-mnist", "data.path": str(FASHION_MNIST)})
    assert len(sources.load_images(cfg, ["t10k-images-idx3-ubyte.gz#00001"])) == 1


def test_data_classes_picks_the_classes_of_every_source(project, dataset):
    cfg = load_config(overrides={"data.classes": ["Bag", "Sneaker"], "data.source": "fashion-mnist",
                                 "data.path": str(FASHION_MNIST)})  # fmt: skip
    scan = sources.scan(cfg)
    assert set(scan.files["label"]) == {"Bag", "Sneaker"} and len(scan.files) == 2 * 7000
    assert len(scan.left_out) == 16 and "test/Ankle_boot" in scan.left_out
    assert {label for _, label in scan.class_folders} == {"Bag", "Sneaker"}
    folder = sources.scan(load_config(overrides={"data.classes": ["columns"]}))
    assert set(folder.files["label"]) == {"columns"} and folder.left_out == sorted(
        f"{split}/{name}" for split in ("test", "train") for name in ("bars", "squares")
    )
