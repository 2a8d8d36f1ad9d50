"""Data-parallel training: `train.processes: 2` runs the train stage as 2 gloo ranks on the CPU;
it matches one process, logs one MLflow run, writes one model, and resumes after a kill."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from mlflow import MlflowClient

from pipeline import preprocess, validate
from pipeline.core.errors import PipelineError
from pipeline.training import checkpoints
from pipeline.training.distributed import Ranks


@pytest.mark.parametrize("images", [96, 97, 101])
def test_shards_cover_every_image_with_equal_steps_on_every_rank(images):
    order = torch.randperm(images)
    world = [Ranks(rank, rank, 4) for rank in range(4)]
    shards = [ranks.shard(order) for ranks in world]
    assert len({len(shard) for shard in shards}) == 1
    assert set(torch.cat(shards).tolist()) == set(range(images))
    steps = {ranks.steps_per_epoch(images, 32) for ranks in world}
    assert steps == {len(range(0, len(shards[0]), 8))}


def test_single_process_shard_and_steps_are_unchanged():
    order = torch.randperm(100)
    assert torch.equal(Ranks().shard(order), order) and Ranks().steps_per_epoch(100, 32) == 4


def test_batch_size_must_split_over_the_processes():
    with pytest.raises(PipelineError, match="train.batch_size 30 does not split over 4 processes"):
        Ranks(0, 0, 4).per_rank_batch(30)


@pytest.fixture
def prepared(project):
    validate.run(project)
    preprocess.run(project)
    return project


def set_train(cfg, **values) -> None:
    params = yaml.safe_load((cfg.root / "params.yaml").read_text())
    params["train"].update(values)
    (cfg.root / "params.yaml").write_text(yaml.safe_dump(params))


def train_stage(cfg, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline.train"], cwd=cfg.root, text=True, **popen)


def finished(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-4000:]
    return output


def trained(cfg) -> tuple[dict, dict]:
    metrics = json.loads((cfg.paths.metrics / "train.json").read_text())
    return metrics, torch.load(cfg.paths.model_file, weights_only=True)


def all_runs(cfg) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{cfg.paths.mlflow_db}")
    return client.search_runs([client.get_experiment_by_name(cfg.tracking.experiment).experiment_id])


def test_two_processes_train_like_one_log_one_run_write_one_model_and_resume_after_a_kill(prepared):
    cfg = prepared
    set_train(cfg, epochs=8)
    finished(train_stage(cfg, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    one, _ = trained(cfg)

    set_train(cfg, processes=2)
    output = finished(train_stage(cfg, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    two, model = trained(cfg)
    assert "cpu/" in output and "× 2" in output
    assert abs(two["val_accuracy"] - one["val_accuracy"]) <= 0.1 and two["val_accuracy"] >= 0.8
    runs = all_runs(cfg)
    assert sorted(run.data.params["train.processes"] for run in runs) == ["1", "2"]
    assert model["info"]["run_id"] in {run.info.run_id for run in runs}
    assert list(cfg.paths.model_file.parent.iterdir()) == [cfg.paths.model_file]

    cfg.paths.model_file.unlink()
    killed = train_stage(cfg, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not checkpoints.previous(cfg.paths.checkpoint).exists() and killed.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    os.killpg(killed.pid, signal.SIGKILL)  # the launcher and both ranks
    killed.wait()
    assert not cfg.paths.model_file.exists()
    output = finished(train_stage(cfg, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    assert "resuming after epoch" in output
    resumed, resumed_model = trained(cfg)
    for name, tensor in model["state_dict"].items():
        torch.testing.assert_close(resumed_model["state_dict"][name], tensor, msg=name)
    assert resumed["val_accuracy"] == two["val_accuracy"]
    assert len(all_runs(cfg)) == 3


@pytest.mark.parametrize(("device", "backend"), [("cpu", "gloo"), pytest.param("cuda", "nccl", marks=pytest.mark.cuda)])
def test_torchrun_with_one_process_runs_the_data_parallel_path_and_trains_like_the_plain_run(prepared, device, backend):
    set_train(prepared, epochs=8, device=device)
    finished(train_stage(prepared, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    plain, _ = trained(prepared)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    done = subprocess.run([*torchrun, "-m", "pipeline.train"], cwd=prepared.root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"rank 0 of 1, {backend} process group" in done.stderr and f"{device}/" in done.stderr
    launched, _ = trained(prepared)
    assert abs(launched["val_accuracy"] - plain["val_accuracy"]) <= 0.05 and launched["val_accuracy"] >= 0.8


def test_a_failing_rank_fails_the_stage_with_one_line(prepared):
    set_train(prepared, processes=2, batch_size=33)
    done = subprocess.run([sys.executable, "-m", "pipeline.train"], cwd=prepared.root, capture_output=True, text=True)
    assert done.returncode != 0
    assert "train.batch_size 33 does not split over 2 processes" in done.stderr
    assert re.search(r"pipeline.train: process [01] of 2 failed \(exit code 1\)", done.stderr.splitlines()[-1])
