"""The prediction log: records from model answers, day partitions, windows, retention."""

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.monitoring import prediction_log as plog


def answer(count: int, channels: int = 8) -> dict:
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(3), count)
    return {
        "class": np.array(["a", "b", "c"])[probabilities.argmin(1)],  # not the most probable: a decision rule's
        "probabilities": probabilities, "novelty": rng.random(count), "unknown": [True] * count,
        "embedding": rng.normal(size=(count, channels)),
    }  # fmt: skip


def test_records_carry_the_answered_class_and_its_own_probability():
    given = answer(4)
    records = plog.answer_records(given, ["a", "b", "c"], ["h0", "h1", "h2", "h3"])
    for record, row, label in zip(records, given["probabilities"], given["class"], strict=True):
        assert record["probability"] == pytest.approx(row[["a", "b", "c"].index(label)])
        assert record["probability"] < row.max() and record["unknown"] is True and len(record["embedding"]) == 8
    bare = plog.answer_records({"class": ["a"], "probabilities": [[0.9, 0.05, 0.05]]}, ["a", "b", "c"], ["h"])
    assert bare[0]["novelty"] is None and bare[0]["unknown"] is None and bare[0]["embedding"] is None


def test_long_embeddings_are_projected_keeping_their_distances():
    rng = np.random.default_rng(1)
    wide = (rng.normal(size=(50, 1280)) * rng.uniform(0.1, 3, (50, 1))).astype(np.float32)  # distances that differ
    small = plog.compact(wide)
    assert small.shape == (50, plog.EMBEDDING_SIZE) and np.array_equal(small, plog.compact(wide))  # fixed
    distances = [np.linalg.norm(m[:25] - m[25:], axis=1) for m in (wide, small)]
    assert np.corrcoef(*distances)[0, 1] > 0.9  # Johnson-Lindenstrauss: distances roughly kept


def test_each_write_is_a_new_file_in_the_days_partition_and_a_window_reads_them_back(tmp_path):
    records = plog.answer_records(answer(5), ["a", "b", "c"], [f"h{i}" for i in range(5)])
    first = plog.write(tmp_path, records[:2], "serve", "m", "3")
    second = plog.write(tmp_path, records[2:], "predict", "m", None)
    assert first != second and first.parent == second.parent
    assert first.parent.name == f"date={datetime.now(UTC).date().isoformat()}"
    assert plog.write(tmp_path, [], "serve", "m", "3") is None
    (first.parent / ".half-written.parquet").write_bytes(b"partial")  # a writer's temporary: never read
    table = plog.read(tmp_path, datetime.now(UTC) - timedelta(minutes=1)).to_pandas()
    assert sorted(table["input_sha256"]) == [f"h{i}" for i in range(5)] and set(table["source"]) == {"serve", "predict"}
    assert pq.read_schema(first).names == plog.SCHEMA.names
    assert len(plog.read(tmp_path, datetime.now(UTC) + timedelta(minutes=1))) == 0  # nothing after now
    assert len(plog.read(tmp_path / "none", datetime.now(UTC))) == 0


def test_retention_deletes_only_partitions_older_than_the_days_kept(tmp_path):
    for day in ("2026-11-01", "2026-11-20", "2026-11-27"):
        (tmp_path / f"date={day}").mkdir()
    (tmp_path / "date=garbage").mkdir()
    gone = plog.prune(tmp_path, keep_days=8, today=date(2026, 11, 27))
    assert [p.name for p in gone] == ["date=2026-11-01"]  # 8 days: the 20th to the 27th
    assert sorted(p.name for p in tmp_path.iterdir()) == ["date=2026-11-20", "date=2026-11-27", "date=garbage"]


def test_image_quality_is_kept_and_a_log_from_before_it_reads_as_missing(tmp_path):
    import pyarrow as pa

    from pipeline.monitoring.image_quality import QUALITY, measure

    images = np.random.default_rng(2).integers(0, 255, (3, 1, 16, 16), dtype=np.uint8)
    records = plog.answer_records({**answer(3), **measure(images)}, ["a", "b", "c"], ["h0", "h1", "h2"])
    assert [r["sharpness"] for r in records] == pytest.approx(measure(images)["sharpness"].tolist())
    plog.write(tmp_path, records, "serve", "m", "1")
    old = pa.Table.from_pylist([{"time": datetime.now(UTC), "class": "a", "input_sha256": "old"}])
    pq.write_table(old, next(tmp_path.glob("date=*")) / "before.parquet")  # a file without the columns
    table = plog.read(tmp_path, datetime.now(UTC) - timedelta(minutes=1)).to_pandas().set_index("input_sha256")
    assert table.loc["old", list(QUALITY)].isna().all() and table.loc["h0", list(QUALITY)].notna().all()
