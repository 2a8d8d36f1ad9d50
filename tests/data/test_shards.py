"""The preprocessed splits in streaming shards: read lazily they slice like the tensor they hold;
an epoch streams every image once, in a seeded order that changes between epochs; data-parallel
ranks stream disjoint shares in equal batch counts."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipeline import preprocess, validate
from pipeline.core.errors import PipelineError
from pipeline.data.shards import ShardedImages, stream_batches
from pipeline.data.splits import TABLE, TensorSplit, load_split, save_split

IMAGES = 300


def numbered(count: int) -> TensorSplit:
    """Images whose first two pixels spell their index, labels in sorted runs (class by class)."""
    images = torch.randint(0, 256, (count, 1, 8, 8), dtype=torch.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = torch.arange(count) % 256, torch.arange(count) // 256
    return TensorSplit(images, torch.arange(count) * 3 // count)


def index_of(images: torch.Tensor) -> list[int]:
    return (images[:, 0, 0, 0].long() + 256 * images[:, 0, 0, 1].long()).tolist()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("processed")
    split = numbered(IMAGES)
    save_split(folder / "train", split)
    return folder, split


def test_a_shard_index_is_stamped_with_its_content_not_the_time(tmp_path):
    split = numbered(40)
    changed = split.images.clone()
    changed[7, 0, 4, 4] ^= 1  # one bit of one pixel
    for name, images in (("first", split.images), ("again", split.images), ("changed", changed)):
        save_split(tmp_path / name, TensorSplit(images, split.labels))
    index = {name: (tmp_path / name / "index.json").read_bytes() for name in ("first", "again", "changed")}
    assert index["first"] == index["again"]
    stamps = {name: json.loads(text)["updated_at"] for name, text in index.items()}
    assert stamps["first"] != stamps["changed"]
    assert torch.equal(ShardedImages(tmp_path / "changed", tuple(changed.shape))[:], changed)


def test_streamed_images_slice_like_the_tensor_they_hold(shards):
    folder, split = shards
    lazy = load_split(folder, "train", "stream")
    assert isinstance(lazy.images, ShardedImages) and lazy.streamed and len(lazy.images) == IMAGES
    assert lazy.images.shape == split.images.shape
    assert torch.equal(lazy.images[7], split.images[7])
    assert torch.equal(lazy.images[250:290], split.images[250:290])
    rows = torch.tensor([299, 3, 150, 3, 0])  # any order, repeats: the images in that order
    assert torch.equal(lazy.images[rows], split.images[rows])
    whole = load_split(folder, "train", "memory")
    assert not whole.streamed and torch.equal(whole.images, split.images)
    assert torch.equal(whole.labels, split.labels) and torch.equal(lazy.labels, split.labels)


def test_a_split_whose_table_disagrees_with_its_shards_is_refused(shards, tmp_path):
    folder, split = shards
    save_split(tmp_path / "train", split)
    table = torch.load(tmp_path / "train" / TABLE, weights_only=True)
    torch.save({**table, "shape": [IMAGES + 1, 1, 8, 8]}, tmp_path / "train" / TABLE)
    with pytest.raises(PipelineError, match="train: 300 images in the shards, 301 in its table; run the preprocess"):
        load_split(tmp_path, "train", "stream")
    with pytest.raises(PipelineError, match="no preprocessed split"):
        load_split(tmp_path, "val")


def test_an_epoch_streams_every_image_once_in_a_seeded_order_new_each_epoch(shards):
    folder, split = shards

    def epoch(number: int, seed: int = 1) -> tuple[list[int], list[int]]:
        seen, labels = [], []
        for images, batch_labels in stream_batches(folder / "train", 64, seed, number):
            assert images.dtype == torch.uint8 and batch_labels.dtype == torch.int64
            seen += index_of(images)
            labels += batch_labels.tolist()
        return seen, labels

    first, labels = epoch(1)
    assert sorted(first) == list(range(IMAGES))  # every image, once
    assert labels == split.labels[first].tolist()  # each with its own label
    assert first != list(range(IMAGES))  # shuffled
    assert epoch(1)[0] == first and epoch(2)[0] != first and epoch(1, seed=2)[0] != first


def test_preprocess_writes_each_split_in_shuffled_order(project):
    """Streaming reads shards in order, a window at a time: a split stored class by class (as a
    folder's paths sort) would make single-class batches."""
    validate.run(project)
    preprocess.run(project)
    train = load_split(project.paths.processed, "train", "stream")
    manifest = pd.read_csv(project.paths.manifest).set_index("path")
    assert (manifest.loc[train.paths, "label"].map({"bars": 0, "columns": 1, "squares": 2}).tolist()
            == train.labels.tolist())  # fmt: skip
    runs = int((np.diff(train.labels.numpy()) != 0).sum()) + 1
    assert runs > len(train.labels) / 3  # sorted would be 3 runs


def _rank(rank: int, world: int, port: int, folder, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        out[rank] = [index_of(images) for images, _ in stream_batches(folder, 16, seed=3, epoch=1)]
        dist.barrier()  # a rank with fewer batches would hang the others' collectives; here, all arrive
    finally:
        dist.destroy_process_group()


def stream_ranks(folder) -> list[list[list[int]]]:
    """The image indices of each batch that 2 gloo ranks stream from `folder` in one epoch."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank, args=(2, port, folder, out), nprocs=2, join=True)
        return [out[0], out[1]]


def test_data_parallel_ranks_stream_disjoint_shares_in_equal_batch_counts(shards):
    folder, _ = shards
    first, second = stream_ranks(folder / "train")
    assert len(first) == len(second) > 0
    seen = [{i for batch in rank for i in batch} for rank in (first, second)]
    assert not seen[0] & seen[1]
    assert len(seen[0]) == len(seen[1]) and len(seen[0] | seen[1]) >= IMAGES - 2 * 16
