"""How much memory this process may still use: the machine's available memory, or less under a
memory cgroup (v1 or v2) limit, as in containers and the tests' limits; and on a GPU, its free memory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:  # PyTorch only on a CUDA device: validation and preprocessing ask without importing it
    import torch

# a split is held whole in memory when it takes at most this share of what is available
MEMORY_SHARE = 0.25


def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup memory limit, or None when it has none."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one hierarchy
            folder = Path("/sys/fs/cgroup") / path.lstrip("/")
            limit_file, usage_file = folder / "memory.max", folder / "memory.current"
        elif "memory" in controllers.split(","):
            folder = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            limit_file, usage_file = folder / "memory.limit_in_bytes", folder / "memory.usage_in_bytes"
        else:
            continue
        try:
            limit, usage = limit_file.read_text().strip(), int(usage_file.read_text())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:
            return max(0, int(limit) - usage)
    return None


def available_bytes() -> int:
    """Memory this process can still take: the machine's available memory, or its cgroup's room if less."""
    room = _cgroup_room()
    available = psutil.virtual_memory().available
    return available if room is None else min(available, room)


def free_for_training(device: torch.device) -> int:
    """Memory free for a training process's activations: the GPU's free memory on CUDA, else
    what this process can still take."""
    if device.type == "cuda":
        import torch

        return torch.cuda.mem_get_info(device)[0]
    return available_bytes()


def fits_in_memory(nbytes: int, copies: int = 1, device: torch.device | None = None) -> bool:
    """Whether `copies` of `nbytes` take at most `MEMORY_SHARE` of the available memory; for a
    CUDA `device` (where training holds the split), also at most that share of its free memory."""
    if device is not None and device.type == "cuda":
        import torch

        if nbytes > MEMORY_SHARE * torch.cuda.mem_get_info(device)[0]:
            return False
    return nbytes * copies <= MEMORY_SHARE * available_bytes()
