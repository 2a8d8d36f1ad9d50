"""Shards streamed straight from the object store (`make object-store`: a real SeaweedFS on
localhost): preprocess publishes them under `data.shards_url`, the train stage streams them from
the bucket, and data-parallel ranks read disjoint shares there in equal batch counts."""

from __future__ import annotations

import shutil
import uuid

import pytest
import yaml

from pipeline import preprocess, train, validate
from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError
from pipeline.data.shards import publish
from pipeline.data.splits import save_split
from tests.data.test_shards import IMAGES, numbered, stream_ranks
from tests.servers import object_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("object-store")
    with object_store(folder / "data", folder / "store.log") as running:
        yield running


@pytest.fixture
def s3(store, monkeypatch):
    """The store's keys and endpoint in the environment, as boto3 (and so LitData) reads them."""
    for name, value in {**store.env, "AWS_ENDPOINT_URL": store.endpoint}.items():
        monkeypatch.setenv(name, value)
    return store


def test_preprocess_publishes_the_shards_and_training_streams_them_from_the_bucket(project, s3, caplog):
    params = yaml.safe_load((project.root / "params.yaml").read_text())
    params["data"]["shards_url"] = f"s3://{s3.bucket}/shards"
    (project.root / "params.yaml").write_text(yaml.safe_dump(params))
    cfg = load_config()
    validate.run(cfg)
    meta = preprocess.run(cfg)
    assert meta["shards"].startswith(f"s3://{s3.bucket}/shards/")
    prefix = meta["shards"].removeprefix(f"s3://{s3.bucket}/")
    published = s3.keys_in(prefix)
    assert {f"{prefix}/{split}/index.json" for split in ("train", "val", "test")} <= set(published)
    for chunk in (cfg.paths.processed / "train").glob("chunk-*.bin"):
        chunk.unlink()  # no local copy of the training images: they can only come from the bucket
    caplog.set_level("INFO", logger="pipeline.train")
    result = train.run(load_config(overrides={"train.loader": "stream", "train.epochs": 4}))
    assert f"images streamed from the shards in {meta['shards']}" in caplog.text
    assert result.history["train_accuracy"].iloc[-1] > 0.6  # three classes: 1/3 by chance


def test_data_parallel_ranks_stream_disjoint_shares_from_the_bucket(s3, tmp_path):
    save_split(tmp_path / "train", numbered(IMAGES))
    url = f"s3://{s3.bucket}/ranks-{uuid.uuid4().hex[:8]}/train"  # as preprocess names them: never reused
    publish(tmp_path / "train", url)
    shutil.rmtree(tmp_path / "train")
    first, second = stream_ranks(url)
    assert len(first) == len(second) > 0
    seen = [{i for batch in rank for i in batch} for rank in (first, second)]
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) >= IMAGES - 2 * 16


def test_wrong_keys_stop_the_upload_in_one_line(s3, tmp_path, monkeypatch):
    save_split(tmp_path / "train", numbered(8))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(PipelineError, match=r"s3://attention-pipeline/x: cannot upload the shards \(.*\); check") as e:
        publish(tmp_path / "train", f"s3://{s3.bucket}/x")
    assert "\n" not in str(e.value)
