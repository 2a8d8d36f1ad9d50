"""Data-parallel training with PyTorch DistributedDataParallel, launched by torchrun's own machinery.

`train.processes: N` makes `python -m pipeline.train` start N ranks on this machine (what
`torchrun --standalone --nproc_per_node N -m pipeline.train` does); across machines, run torchrun
yourself with its rendezvous flags. Each rank trains on its shard of every epoch; gradients are
averaged (NCCL on GPUs, gloo on the CPU); rank 0 alone validates, logs and writes files.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from pipeline.core.errors import SERVICE_EXIT, PipelineError, ServiceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    grouped: bool = False  # in a process group (torchrun started it), even one of a single rank

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's share of an epoch's order, as DistributedSampler cuts it: padded by wrapping
        around to a multiple of the world size, then every world_size-th index from `rank`."""
        if self.world_size == 1:
            return order
        padding = -len(order) % self.world_size
        return torch.cat([order, order[:padding]])[self.rank :: self.world_size]

    def per_rank_batch(self, batch_size: int) -> int:
        """The per-process batch for a global `train.batch_size`."""
        if batch_size % self.world_size:
            raise PipelineError(
                f"train.batch_size {batch_size} does not split over {self.world_size} processes; "
                f"make it a multiple of {self.world_size}"
            )
        return batch_size // self.world_size

    def steps_per_epoch(self, images: int, batch_size: int) -> int:
        """Optimizer steps per epoch, equal on every rank."""
        per_rank_images = -(-images // self.world_size)
        return -(-per_rank_images // self.per_rank_batch(batch_size))

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """`values` summed over all ranks (in place)."""
        if self.grouped:
            dist.all_reduce(values)
        return values

    def from_main(self, value: object) -> object:
        """Rank 0's `value` (anything picklable), on every rank."""
        if not self.grouped:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wrap(self, model: nn.Module, some_frozen: bool = False) -> nn.Module:
        """The model as the training steps run it: in DistributedDataParallel across ranks
        (`some_frozen`: some parameters get no gradient in some steps)."""
        if not self.grouped:
            return model
        device_ids = [self.local_rank] if next(model.parameters()).is_cuda else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=some_frozen)


ONE_PROCESS = Ranks()


def launched() -> bool:
    """Whether this process is a rank started by torchrun (or by `launch`)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def die_with_launcher() -> None:
    """Have Linux kill this rank when its launcher dies, even by SIGKILL.

    torchrun starts each rank in a session of its own, so killing the launcher (or `dvc repro`
    above it) would leave the ranks training on, writing files under a later run.
    """
    if sys.platform != "linux":
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the launcher died before we asked
        os._exit(1)


@contextmanager
def process_group(use_cuda: bool) -> Iterator[Ranks]:
    """Join the ranks torchrun started (NCCL on GPUs, gloo on the CPU), also a single one, so that
    `torchrun --nproc_per_node 1` runs the multi-GPU code path; a plain process: no group."""
    if not launched():
        yield ONE_PROCESS
        return
    die_with_launcher()
    local_rank = int(os.environ["LOCAL_RANK"])
    if use_cuda:
        torch.cuda.set_device(local_rank)
    backend = "nccl" if use_cuda else "gloo"
    dist.init_process_group(backend)
    log.info("train: rank %d of %d, %s process group", dist.get_rank(), dist.get_world_size(), backend)
    try:
        yield Ranks(dist.get_rank(), local_rank, dist.get_world_size(), grouped=True)
    finally:
        dist.destroy_process_group()


def launch(processes: int, module: str) -> None:
    """Run `python -m module` as `processes` ranks on this machine and wait for all of them."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if "OMP_NUM_THREADS" not in os.environ:  # share the cores rather than oversubscribe them
        os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // processes))
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=processes, run_id=str(uuid.uuid4()),
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
    )  # fmt: skip
    log.info("launching %d processes: %s -m %s", processes, sys.executable, module)
    try:
        elastic_launch(config, sys.executable)("-m", module)
    except ChildFailedError as error:
        rank, failure = error.get_first_failure()
        failed = ServiceError if failure.exitcode == SERVICE_EXIT else PipelineError  # the flow retries a service
        raise failed(
            f"{module}: process {rank} of {processes} failed (exit code {failure.exitcode}); its error is above"
        ) from None
