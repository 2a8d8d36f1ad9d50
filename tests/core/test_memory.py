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
    """1.5× the limit here (each byte costs CI time); `bench.speed.memory_limit` shows 3× (BENCHMARKS.md)."""
    limit = EPOCH_LIMIT_MB * 2**20
    project = write_project(tmp_path, 3 * limit // 2, size=96)
    stored = sum(path.stat().st_size for path in (project / "data" / "processed" / "train").glob("chunk-*.bin"))
    assert stored >= 3 * limit // 2
    with memory_cgroup(limit) as cgroup:
        streamed = run_train(project, cgroup, "auto", tmp_path / "auto.log")
    assert streamed["exit_code"] == 0, streamed["log_tail"]
    assert "images streamed from the shards" in streamed["log_tail"] and "epoch 1/1" in streamed["log_tail"]
    assert (project / "models" / "model.pt").is_file() and streamed["peak_mb"] <= EPOCH_LIMIT_MB
    with memory_cgroup(limit) as cgroup:  # the negative control: the same run holding the split in memory
        whole = run_train(project, cgroup, "memory", tmp_path / "memory.log")
    assert whole["exit_code"] == -9 and whole["peak_mb"] >= EPOCH_LIMIT_MB - 1, whole
