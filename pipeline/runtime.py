"""Device and precision choices, made once at the top of a stage, and batched inference on them."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class Runtime:
    """Where the model runs and in which precision: CUDA with bf16 autocast, else CPU fp32 channels_last."""

    device: torch.device
    amp_dtype: torch.dtype | None

    @property
    def name(self) -> str:
        precision = "bf16" if self.amp_dtype == torch.bfloat16 else "fp32"
        return f"{self.device.type}/{precision}"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def prepare(self, model: nn.Module) -> nn.Module:
        return model.to(self.device, memory_format=torch.channels_last)


def select_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    """Resolve `train.device` and `train.precision` ('auto': bf16 on CUDA, fp32 on the CPU)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise PipelineError("train.device: 'cuda' asked for but no CUDA device is visible; use 'auto' or 'cpu'")
    chosen = torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")
    bf16 = precision == "bf16" or (precision == "auto" and chosen.type == "cuda")
    return Runtime(chosen, torch.bfloat16 if bf16 else None)


@torch.no_grad()
def predict_batches(
    model: nn.Module, images: torch.Tensor, batch_size: int, runtime: Runtime
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32) and attention maps for uint8 `images`, on the CPU, in batches."""
    model.eval()
    logits, attention = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(runtime.device, non_blocking=True)
        with runtime.autocast():
            out = model(batch.contiguous(memory_format=torch.channels_last))
        logits.append(out.logits.float().cpu())
        attention.append(out.attention.float().cpu())
    return torch.cat(logits), torch.cat(attention)
