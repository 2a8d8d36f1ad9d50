"""`train.loader: auto` decides by the memory this process may use: inside a container's memory
cgroup that is the limit's room, not the machine's free memory."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.speed.memory_limit import cgroup_unavailable, memory_cgroup
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
