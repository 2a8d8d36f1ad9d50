import os
from pathlib import Path

import numpy as np
import pytest

from pipeline import ingest
from pipeline.errors import PipelineError
from pipeline.ingest import FASHION_MNIST_CLASSES, ingest_imagefolder, read_idx

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_folder_with_splits_is_copied_as_is(dataset, tmp_path):
    result = ingest_imagefolder(dataset, tmp_path / "raw")
    assert files(tmp_path / "raw") == files(dataset)
    assert result.images == 150 and result.classes == ["bars", "columns", "squares"]


def test_folder_without_splits_goes_to_train(tmp_path, dataset):
    result = ingest_imagefolder(dataset / "train", tmp_path / "raw")
    assert {p.split("/")[0] for p in files(tmp_path / "raw")} == {"train"}
    assert result.images == 120


def test_hidden_files_and_symlinks_are_not_copied(dataset, tmp_path):
    (dataset / "train" / "bars" / ".DS_Store").write_bytes(b"x")
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"x")
    os.symlink(outside, dataset / "train" / "bars" / "link.png")
    result = ingest_imagefolder(dataset, tmp_path / "raw")
    assert "train/bars/.DS_Store" in result.skipped and "train/bars/link.png" in result.skipped
    assert not (tmp_path / "raw" / "train" / "bars" / "link.png").exists()


def test_missing_folder_names_data_path(tmp_path):
    with pytest.raises(PipelineError, match="data.path: .* is not a folder"):
        ingest_imagefolder(tmp_path / "nowhere", tmp_path / "raw")


def test_run_replaces_raw_only_when_complete(project, dataset):
    ingest.run(project)
    assert files(project.paths.raw) == files(dataset)
    (dataset / "test").rename(dataset.parent / "moved")
    (dataset / "train" / "bars").rename(dataset.parent / "gone")
    ingest.run(project)
    assert {p.split("/")[1] for p in files(project.paths.raw)} == {"columns", "squares"}


def test_missing_fashion_mnist_says_what_to_install(tmp_path):
    with pytest.raises(PipelineError, match="apt-get install dataset-fashion-mnist"):
        ingest.ingest_fashion_mnist(tmp_path, tmp_path / "raw")


def test_debian_fashion_mnist_reads_as_70000_labelled_images():
    train_images = read_idx(FASHION_MNIST / "train-images-idx3-ubyte.gz")
    train_labels = read_idx(FASHION_MNIST / "train-labels-idx1-ubyte.gz")
    test_images = read_idx(FASHION_MNIST / "t10k-images-idx3-ubyte.gz")
    assert train_images.shape == (60000, 28, 28) and test_images.shape == (10000, 28, 28)
    assert np.bincount(train_labels).tolist() == [6000] * len(FASHION_MNIST_CLASSES)
    assert 0.25 < train_images.mean() / 255 < 0.32  # the published mean is 0.286


def test_truncated_idx_is_refused(tmp_path):
    (tmp_path / "bad.idx").write_bytes(b"\0\0\x08\x01\0\0\0\x10abc")
    with pytest.raises(PipelineError, match="truncated"):
        read_idx(tmp_path / "bad.idx")
