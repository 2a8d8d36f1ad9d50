"""The prediction log: one record per answered image, written by the server and by batch prediction.

A folder of Parquet files partitioned by day (`<monitoring.log>/date=YYYY-MM-DD/*.parquet`, Hive
style: pandas, pyarrow, DuckDB and Spark read it as one table). Writers only ever add new files,
each written under a hidden name and renamed into place, so any number of servers and batch jobs
can log at once and a reader never sees half a file. The monitoring run deletes the partitions older
than `monitoring.keep_days`.

Schema (one row per image): `time` (UTC), `source` (serve | predict), `model`, `version`, `class`
(the answer), `probability` (of that class), `novelty` and `unknown` (null for a model without a
detector), `embedding` (the pooled features, at most EMBEDDING_SIZE numbers: longer ones are
projected by a fixed random matrix, which keeps their distances), `brightness`, `contrast` and
`sharpness` of the model's input (`image_quality.py`; null in files and from models from before
them), `input_sha256` (the first 16 hex digits of the image file's or array's hash), and `image`
(the model's input, uint8 C×H×W bytes) only with `monitoring.log_images: true`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipeline.monitoring.image_quality import QUALITY

EMBEDDING_SIZE = 32
SCHEMA = pa.schema([
    ("time", pa.timestamp("us", tz="UTC")), ("source", pa.string()), ("model", pa.string()),
    ("version", pa.string()), ("class", pa.string()), ("probability", pa.float32()), ("novelty", pa.float32()),
    ("unknown", pa.bool_()), ("embedding", pa.list_(pa.float32())),
    *[(name, pa.float32()) for name in QUALITY], ("input_sha256", pa.string()), ("image", pa.binary()),
])  # fmt: skip


@functools.cache
def _projection(channels: int) -> np.ndarray:
    """The fixed (seeded) random projection of `channels`-long embeddings, made once per process."""
    projection = np.random.default_rng(0).standard_normal((channels, EMBEDDING_SIZE), dtype=np.float32)
    return projection / np.sqrt(EMBEDDING_SIZE)


def compact(embedding: np.ndarray) -> np.ndarray:
    """Embeddings N×C as N×min(C, EMBEDDING_SIZE): a fixed random projection when longer."""
    embedding = np.asarray(embedding, dtype=np.float32)
    if embedding.shape[1] <= EMBEDDING_SIZE:
        return embedding
    return embedding @ _projection(embedding.shape[1])


def input_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def answer_records(answer: dict, classes: list[str], hashes: list[str], images: np.ndarray | None = None) -> list[dict]:
    """Records (without time, source, model and version) from a model answer: `class`, `probabilities`
    (N×`classes`), and where present `novelty`, `unknown`, `embedding` and the image quality figures
    (`image_quality.measure`); `images` (uint8 N×C×H×W) to keep them too."""
    count = len(answer["class"])
    probabilities = np.asarray(answer["probabilities"])
    novelty = answer.get("novelty")
    unknown = answer.get("unknown")
    embedding = compact(answer["embedding"]) if answer.get("embedding") is not None else None
    return [
        {
            "class": str(answer["class"][i]),
            "probability": float(probabilities[i][classes.index(str(answer["class"][i]))]),
            "novelty": None if novelty is None else float(novelty[i]),
            "unknown": None if unknown is None else bool(unknown[i]),
            "embedding": None if embedding is None else embedding[i].tolist(),
            **{name: None if answer.get(name) is None else float(answer[name][i]) for name in QUALITY},
            "input_sha256": hashes[i],
            "image": None if images is None else np.ascontiguousarray(images[i]).tobytes(),
        }
        for i in range(count)
    ]


def write(folder: Path, records: list[dict], source: str, model: str, version: str | None) -> Path | None:
    """Add `records` to the log as one new file in today's partition (UTC); the file, or None when empty."""
    if not records:
        return None
    now = datetime.now(UTC)
    rows = [{"time": now, "source": source, "model": model, "version": version, **record} for record in records]
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    partition = folder / f"date={now.date().isoformat()}"
    partition.mkdir(parents=True, exist_ok=True)
    name = f"{now:%H%M%S}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
    temporary = partition / f".{name}"
    pq.write_table(table, temporary)
    os.replace(temporary, partition / name)
    return partition / name


def read(folder: Path, since: datetime, until: datetime | None = None) -> pa.Table:
    """The records logged from `since` (to `until`), as one table (empty when there are none)."""
    if not folder.is_dir() or not any(folder.glob("date=*/*.parquet")):
        return SCHEMA.empty_table()
    dataset = ds.dataset(folder, format="parquet", partitioning="hive", schema=SCHEMA)
    condition = ds.field("time") >= pa.scalar(since, pa.timestamp("us", tz="UTC"))
    if until is not None:
        condition &= ds.field("time") < pa.scalar(until, pa.timestamp("us", tz="UTC"))
    return dataset.to_table(filter=condition)


def prune(folder: Path, keep_days: int, today: date | None = None) -> list[Path]:
    """Delete the day partitions older than `keep_days`; the ones deleted."""
    first_kept = (today or datetime.now(UTC).date()) - timedelta(days=keep_days - 1)
    gone = []
    for partition in sorted(folder.glob("date=*")):
        try:
            day = date.fromisoformat(partition.name.removeprefix("date="))
        except ValueError:
            continue
        if day < first_kept:
            shutil.rmtree(partition)
            gone.append(partition)
    return gone
