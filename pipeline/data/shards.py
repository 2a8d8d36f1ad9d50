"""Images in streaming shards (LitData): chunks of about `SHARD_BYTES` that hold each image as it is
trained on (uint8 C×H×W at the model's size) with its label, and an `index.json`.

Written by the preprocess stage, a block of images at a time, so no step holds a whole split; when
a split only grows, its old chunks are kept (hard-linked) and the new images go into new chunks
after them (`link_chunks`, `ShardWriter(after=...)`).
Read three ways: in order (`ShardedImages`, a lazy sequence that slices like a tensor), whole into
one tensor (`read_all`), and shuffled in batches for training (`stream_batches`), which gives every
data-parallel rank its own share and the same number of batches. The folder can be local or an
object store URL (`s3://bucket/prefix`, where `publish` uploads a folder): the keys and endpoint
come from the environment as for boto3 (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_ENDPOINT_URL`); LitData caches the chunks it downloads under `~/.lightning/chunks`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from pipeline.core.errors import PipelineError, first_line
from pipeline.core.files import file_sha256, write_text

log = logging.getLogger(__name__)

SHARD_BYTES = "64MB"


def _allow_plain_http() -> None:
    """LitData's object-store client (obstore) refuses an http:// endpoint unless told; a store on
    this machine (`make object-store`) speaks plain HTTP on 127.0.0.1."""
    if os.environ.get("AWS_ENDPOINT_URL", "").startswith("http://"):
        from litdata.streaming import downloader

        downloader._OBSTORE_CLIENT_OPTIONS["allow_http"] = "true"


def _streaming_dataset(folder: Path | str, shuffle: bool = False, seed: int = 0):
    from litdata import StreamingDataset

    if str(folder).startswith("s3://"):
        _allow_plain_http()

    with warnings.catch_warnings():  # LitData's version check and its cache-size notes
        warnings.simplefilter("ignore")
        if not shuffle:
            return StreamingDataset(str(folder))
        # shuffled: chunks in a random order, each decoded whole (one at a time) and read in a full
        # permutation; LitData's default permutes windows of 256 and is 200× slower when told not to
        return StreamingDataset(str(folder), shuffle=True, seed=seed, item_shuffle_window=0, batch_decode="all")


class ShardWriter:
    """Append images and labels, in order, to a new shard folder, or after the chunks of the index
    `after` (already in the folder: `link_chunks`); `close` writes the folder's index."""

    def __init__(self, folder: Path, after: dict | None = None) -> None:
        from litdata.streaming.writer import BinaryWriter

        self.folder = folder
        self._after = after
        if after:  # LitData's writer writes nothing into a folder that has an index; close writes the new one
            (folder / "index.json").unlink(missing_ok=True)
        chunks = after["chunks"] if after else []
        self._writer = BinaryWriter(str(folder), chunk_bytes=SHARD_BYTES, chunk_index=len(chunks))
        self.count = sum(chunk["chunk_size"] for chunk in chunks)

    def add(self, images: np.ndarray, labels: Sequence[int]) -> None:
        for image, label in zip(images, labels, strict=True):
            self._writer.add_item(self.count, {"image": np.ascontiguousarray(image), "label": int(label)})
            self.count += 1

    def close(self) -> None:
        self._writer.done()
        if self._after is None:
            self._writer.merge()
        else:  # LitData's own append (`optimize(mode="append")`): the old chunks first, then the new
            self._writer._merge_no_wait(existing_index=self._after)
        stamp_index(self.folder, self._after)


def stamp_index(folder: Path, after: dict | None = None) -> None:
    """Give the folder's index a stamp of its chunks' content where LitData writes the time
    (`updated_at`, its cache key): the same images give the same bytes, so DVC sees no change after
    a rewrite that changed nothing. Appended chunks are hashed after the `after` index's stamp."""
    index_file = folder / "index.json"
    index = json.loads(index_file.read_text())
    digest = hashlib.sha256(after["updated_at"].encode() if after else b"")
    for chunk in index["chunks"][len(after["chunks"]) if after else 0 :]:
        digest.update(file_sha256(folder / chunk["filename"]).encode())
    index["updated_at"] = digest.hexdigest()[:32]
    write_text(index_file, json.dumps(index, sort_keys=True))  # a new file: never through a link to the old


def link_chunks(source: Path, target: Path) -> dict:
    """Put shard folder `source` (its chunks and index) into the new folder `target` without writing
    the chunks again (hard links; copies across file systems) and return its index."""
    index = json.loads((source / "index.json").read_text())
    target.mkdir(parents=True)
    for name in [chunk["filename"] for chunk in index["chunks"]] + ["index.json"]:
        try:
            os.link(source / name, target / name)
        except OSError:
            shutil.copy2(source / name, target / name)
    return index


def publish(folder: Path, url: str) -> None:
    """Upload a shard folder to `url` (s3://bucket/prefix): the chunks, then the files that name them."""
    import boto3.session
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    files = sorted(folder.iterdir(), key=lambda file: (file.suffix != ".bin", file.name))
    try:
        client = boto3.session.Session().client("s3")  # the keys in the environment now, not a cached session's
        for file in files:
            client.upload_file(str(file), bucket, f"{prefix.rstrip('/')}/{file.name}")
    except (Boto3Error, BotoCoreError, ClientError) as error:
        raise PipelineError(
            f"{url}: cannot upload the shards ({first_line(error)}); check AWS_ENDPOINT_URL and the keys "
            f"(python -m pipeline.object_store check {url})"
        ) from None


class ShardedImages:
    """A split's images read from its shards on demand: `len`, `shape`, and indexing by an int, a
    slice, a sequence of indices or a boolean mask (read in ascending order, where shards are fast)
    give uint8 tensors, so the code that scores a tensor in slices scores shards unchanged; `subset`
    gives a lazy view of some of them."""

    device = torch.device("cpu")
    dtype = torch.uint8

    def __init__(self, folder: Path | str, shape: tuple[int, ...], rows: np.ndarray | None = None) -> None:
        self.folder = folder
        self._dataset = _streaming_dataset(folder)
        self._rows = rows  # which stored images this view shows, in order (None: all)
        stored = sum(end - start for start, end in self._dataset.region_of_interest)  # all ranks' (len: this rank's)
        if stored != shape[0]:
            raise PipelineError(
                f"{folder}: {stored} images in the shards, {shape[0]} in its table; "
                "run the preprocess stage again ('dvc repro -f preprocess')"
            )
        self._count = stored
        self.shape = torch.Size(shape if rows is None else (len(rows), *shape[1:]))

    def __len__(self) -> int:
        return self.shape[0]

    def _stored(self, index) -> np.ndarray:
        """The stored positions of the images at `index` (a slice, indices or a boolean mask)."""
        if isinstance(index, slice):
            rows = np.arange(len(self))[index]
        else:
            rows = torch.as_tensor(index).cpu().numpy().reshape(-1)
            rows = np.flatnonzero(rows) if rows.dtype == bool else rows
        return rows if self._rows is None else self._rows[rows]

    def subset(self, index) -> ShardedImages:
        """A view of the images at `index`, read only when used."""
        return ShardedImages(self.folder, (self._count, *self.shape[1:]), self._stored(index))

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, int):
            return torch.from_numpy(self._dataset[int(self._stored([index])[0])]["image"])
        rows = self._stored(index)
        order = np.argsort(rows, kind="stable")
        out = torch.empty((len(rows), *self.shape[1:]), dtype=torch.uint8)
        for position in order:
            out[position] = torch.from_numpy(self._dataset[int(rows[position])]["image"])
        return out

    def nbytes(self) -> int:
        return int(np.prod(self.shape))


def read_all(folder: Path, shape: tuple[int, ...]) -> torch.Tensor:
    """A split's images, whole, as one N×C×H×W uint8 tensor."""
    return ShardedImages(folder, shape)[:]


def stream_batches(
    folder: Path | str, batch_size: int, seed: int, epoch: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of (uint8 images, int64 labels) batches in a seeded shuffled order (chunks decoded
    in this process; from an object store LitData downloads the next chunks on a background
    thread). Under torch.distributed each rank streams its own share; all ranks get the same number
    of batches (the few images that do not divide evenly are left out of that epoch)."""
    from litdata import StreamingDataLoader

    dataset = _streaming_dataset(folder, shuffle=True, seed=seed)
    loader = StreamingDataLoader(dataset, batch_size=batch_size, num_workers=0)
    loader.current_epoch = epoch - 1  # the loader counts its own epochs from 1 and shuffles by that count
    for batch in loader:
        yield batch["image"], batch["label"].long()
