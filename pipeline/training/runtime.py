"""Device and precision choices, made once at the top of a stage, and batched inference on them."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.core.errors import PipelineError
from pipeline.model.network import Prediction

# pixel values per forward pass when a split is scored: on a GPU large batches keep it busy; on the
# CPU a batch whose activations stay near its caches is faster (2-core Xeon, BENCHMARKS.md "Scoring
# large images on the CPU": 128-px grey images at 2**24 values 304 images/s, at 2**20 436)
SCORING_VALUES = {"cuda": 2**24, "cpu": 2**20}


@dataclass(frozen=True)
class Runtime:
    """Where the model runs, in which autocast precision (None: fp32) and memory layout."""

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool = True

    @property
    def name(self) -> str:
        precision = "bf16" if self.amp_dtype == torch.bfloat16 else "fp32"
        return f"{self.device.type}/{precision}"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def prepare(self, model: nn.Module) -> nn.Module:
        return model.to(self.device, memory_format=self.memory_format)

    def scoring_batch(self, images: torch.Tensor, at_most: int = 1024) -> int:
        """Images per forward pass for scoring `images` here: up to `at_most` small ones, fewer large
        ones (`SCORING_VALUES` pixel values; on the CPU 1 M, so activations stay near the caches)."""
        values = SCORING_VALUES.get(self.device.type, SCORING_VALUES["cuda"])
        return max(1, min(at_most, values // images.shape[1:].numel()))


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc's allocator to reuse freed memory instead of mapping each large tensor afresh.

    By default every allocation above 32 MB (a batch's activations) is a new mmap whose pages the
    kernel zero-fills on first touch: millions of page faults per epoch. Returns False where the C
    library is not glibc (nothing changes there).
    """
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


def uses_cuda(device: str) -> bool:
    """Whether `train.device` resolves to CUDA here."""
    if device == "cuda" and not torch.cuda.is_available():
        raise PipelineError("train.device: 'cuda' asked for but no CUDA device is visible; use 'auto' or 'cpu'")
    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


# bf16 convolutions with no fast CPU path: EfficientNet's depthwise ones train 2× slower than in fp32
# (2-core Xeon with AMX, a training step at 128 px: 34 against 52 images/s)
CPU_FP32_BACKBONES = {"efficientnet_lite0"}


def select_runtime(device: str = "auto", precision: str = "auto", gpu: int = 0, backbone: str | None = None) -> Runtime:
    """Resolve `train.device` (CUDA device number `gpu`) and `train.precision`; 'auto' precision is
    bf16 on CUDA and on CPUs with native bf16 (except for a `backbone` slower in it there), else fp32.
    On the CPU, also tunes the memory allocator for large tensors; on CUDA, lets cuDNN pick its
    fastest convolutions and fp32 use TF32."""
    chosen = torch.device("cuda", gpu) if uses_cuda(device) else torch.device("cpu")
    if chosen.type == "cpu":
        keep_freed_memory()
    else:
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN time its algorithms once per shape
        torch.set_float32_matmul_precision("high")  # fp32 matrix products on TF32 tensor cores
    cpu_bf16 = native_cpu_bf16() and backbone not in CPU_FP32_BACKBONES
    bf16 = precision == "bf16" or (precision == "auto" and (chosen.type == "cuda" or cpu_bf16))
    return Runtime(chosen, torch.bfloat16 if bf16 else None)


def _batches(call, images: torch.Tensor, batch_size: int, runtime: Runtime, rows: torch.Tensor | None):
    """`call`'s outputs for `images` (or those at `rows`) in batches, on the runtime's device."""
    count = len(images) if rows is None else len(rows)
    for start in range(0, count, batch_size):
        part = slice(start, start + batch_size)
        batch = (images[part] if rows is None else images[rows[part]]).to(runtime.device, non_blocking=True)
        with runtime.autocast():
            yield call(batch.contiguous(memory_format=runtime.memory_format))


@torch.no_grad()
def predict_batches(
    model: nn.Module, images: torch.Tensor, batch_size: int, runtime: Runtime, rows: torch.Tensor | None = None
) -> Prediction:
    """The model's outputs for uint8 `images` (or those at `rows`), float32 on the CPU, in batches:
    `images` may be a split read from its shards as it goes."""
    model.eval()
    parts = [
        Prediction(*(None if t is None else t.float().cpu() for t in out))
        for out in _batches(model, images, batch_size, runtime, rows)
    ]
    return Prediction(*(None if column[0] is None else torch.cat(column) for column in zip(*parts, strict=True)))


@torch.no_grad()
def head_maps(model: nn.Module, images: torch.Tensor, batch_size: int, runtime: Runtime) -> torch.Tensor | None:
    """N×heads×H×W: each attention head's map for uint8 `images` (`AttentionCNN.head_maps`), float32
    on the CPU; None for a model with one map or none."""
    model.eval()
    parts = list(_batches(model.head_maps, images, batch_size, runtime, None))
    return None if parts[0] is None else torch.cat([maps.float().cpu() for maps in parts])


@torch.no_grad()
def mean_features(
    model: nn.Module, images: torch.Tensor, batch_size: int, runtime: Runtime, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """N×C: each image's last feature map averaged over all positions (what the "unknown" detector
    compares, `AttentionCNN.mean_features`), float32 on the CPU."""
    model.eval()
    return torch.cat([means.cpu() for means in _batches(model.mean_features, images, batch_size, runtime, rows)])
