"""The machine a benchmark ran on, and its measured limit: achievable matrix-multiply FLOP/s."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import torch

from pipeline.training.runtime import native_cpu_bf16


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it (or the platform's processor string)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def describe() -> dict:
    """CPU, cores, memory, bf16 support, GPU and library versions."""
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(memory_gb, 1),
        "cpu_native_bf16": native_cpu_bf16(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "gpu": gpu,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def matmul_gflops(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 5) -> float:
    """Median GFLOP/s of `size`×`size` matrix products (2·size³ FLOPs each) in `dtype` on `device`."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    products = 20 if device.type == "cuda" else 3

    def timed() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(products):
            torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    timed()
    seconds = statistics.median(timed() for _ in range(repeats))
    return 2 * size**3 * products / seconds / 1e9


def matmul_limits(device: torch.device, size: int | None = None) -> dict[str, float]:
    """Achievable fp32 GFLOP/s, and bf16 where the hardware computes it natively (`size`: the
    matrices' side, default the one that reaches the limit)."""
    size = size or (8192 if device.type == "cuda" else 2048)
    limits = {"fp32": matmul_gflops(device, torch.float32, size)}
    if device.type == "cuda" or native_cpu_bf16():
        limits["bf16"] = matmul_gflops(device, torch.bfloat16, size)
    return limits
