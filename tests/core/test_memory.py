"""`train.loader: auto` decides by the memory this process may use: inside a container's memory
cgroup that is the limit's room, not the machine's free memory."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.speed.memory_limit import cgroup_unavailable, memory_cgroup, run_train, write_project
from pipeline.core.memory import available_bytes, fits_in_memory
from tests.synthetic import PROJECT

LIMIT = 700 * 2**20
ASK = "from pipeline.core.memory import *; print(available_bytes(), fits_in_memory(2**28))"


@pytest.mark.skipif(cgroup_unavailable() is not None, reason=str(cgroup_unavailable()))
def test_inside_a_memory_cgroup_the_available_memory_is_the_limits_room():
    with memory_cgroup(LIMIT) as cgroup:
        done = subprocess.run([sys.executable, "-c", ASK], cwd=PROJECT, preexec_fn=cgroup.enter, capture_output=True,
                              text=True, check=True)  # fmt: skip
    available, fits = done.stdout.split()
    assert 0 < int(available) < LIMIT and fits == "False"  # 256 MB is over a quarter of what the limit leaves
    assert available_bytes() > 4 * 2**28 and fits_in_memory(2**28)  # outside it, this machine has the room


EPOCH_LIMIT_MB = 900  # the train stage itself (Python, PyTorch, MLflow, a small model) peaks near 800 MB


@pytest.mark.skipif(cgroup_unavailable() is not None, reason=str(cgroup_unavailable()))
def test_an_epoch_on_data_larger_than_the_limit_streams_under_it_where_whole_tensors_are_killed(tmp_path):
    """1.2× the limit here (each byte costs CI time); `bench.speed.memory_limit` shows 3× (BENCHMARKS.md)."""
    limit = EPOCH_LIMIT_MB * 2**20
    project = write_project(tmp_path, 6 * limit // 5, size=96)
    stored = sum(path.stat().st_size for path in (project / "data" / "processed" / "train").glob("chunk-*.bin"))
    assert stored >= 6 * limit // 5
    with memory_cgroup(limit) as cgroup:
        streamed = run_train(project, cgroup, "auto", tmp_path / "auto.log")
    assert streamed["exit_code"] == 0, streamed["log_tail"]
    assert "images streamed from the shards" in streamed["log_tail"] and "epoch 1/1" in streamed["log_tail"]
    assert (project / "models" / "model.pt").is_file() and streamed["peak_mb"] <= EPOCH_LIMIT_MB
    with memory_cgroup(limit) as cgroup:  # the negative control: the same run holding the split in memory
        whole = run_train(project, cgroup, "memory", tmp_path / "memory.log")
    assert whole["exit_code"] == -9 and whole["peak_mb"] >= EPOCH_LIMIT_MB - 1, whole


CAM_LIMIT_MB = 1200  # the process with evaluate's imports and a small model peaks near 700 MB
CAM = """
import sys, torch
from pipeline.core.config import load_config
from pipeline.evaluate import gradcam_batch
from pipeline.model.gradcam import gradcam_maps
from pipeline.model.network import AttentionCNN
from pipeline.training.runtime import select_runtime
cfg = load_config()
runtime = select_runtime("cpu", "fp32")
model = runtime.prepare(AttentionCNN(cfg.model, 1, 2, [0.5], [0.25]))
images = torch.randint(0, 256, (128, 1, 128, 128), dtype=torch.uint8)
batch = gradcam_batch(model, images, 512, runtime) if sys.argv[1] == "capped" else len(images)
print(batch, tuple(gradcam_maps(model, images, (32, 32), batch).shape), flush=True)
"""


@pytest.mark.skipif(cgroup_unavailable() is not None, reason=str(cgroup_unavailable()))
def test_grad_cam_cuts_its_batch_to_what_the_memory_limit_holds_where_the_whole_batch_is_killed():
    """Evaluate's Grad-CAM keeps every layer's output in fp32 for its backward pass: 128 images at
    128 px (20 MB each) in one pass exceed the limit; the cut batch computes every map under it."""
    limit = CAM_LIMIT_MB * 2**20
    runs = {}
    for mode in ("capped", "whole"):
        with memory_cgroup(limit) as cgroup:
            done = subprocess.run([sys.executable, "-c", CAM, mode], cwd=PROJECT, preexec_fn=cgroup.enter,
                                  capture_output=True, text=True)  # fmt: skip
            runs[mode] = (done.returncode, done.stdout.split(), cgroup.peak_bytes() / 2**20)
    (code, out, peak) = runs["capped"]
    assert code == 0 and out[1:] == ["(128,", "32,", "32)"] and 8 <= int(out[0]) < 128, runs
    assert peak < CAM_LIMIT_MB
    assert runs["whole"][0] == -9, runs  # the negative control: the batch the params ask for, uncut
