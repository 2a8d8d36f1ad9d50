"""The training path on a CUDA GPU: bf16, channels_last, the uint8 split and its augmentation on the
device, fused optimizer, `torch.compile`, and model files that load on the CPU.

Marked `cuda`: collected only where a CUDA device is visible (`pytest -m cuda` runs them alone;
`bench/gpu/run.sh` runs them on a lent GPU).
"""

import copy
import json

import mlflow
import pytest
import torch

from pipeline import evaluate, export, preprocess, train, validate
from pipeline.core.config import AugmentConfig, load_config
from pipeline.core.memory import MEMORY_SHARE, available_bytes, fits_in_memory
from pipeline.data.splits import TensorSplit, load_split
from pipeline.model.model_file import load_model
from pipeline.training import steps
from pipeline.training.augment import augment
from pipeline.training.runtime import predict_batches, select_runtime

pytestmark = pytest.mark.cuda
CUDA = {"train.device": "cuda"}


@pytest.fixture
def prepared(project):
    validate.run(project)
    preprocess.run(project)
    return project


def test_runtime_is_bf16_channels_last_on_the_gpu():
    runtime = select_runtime("auto", "auto")
    assert runtime.device.type == "cuda" and runtime.name == "cuda/bf16"
    assert torch.backends.cudnn.benchmark


def test_augment_on_the_gpu_flips_and_shifts_whole_images_reproducibly():
    images = torch.zeros((256, 1, 12, 12), dtype=torch.uint8, device="cuda")
    images[:, :, 5, 3] = 255  # one bright pixel, off the vertical axis: a flip moves it to column 8
    cfg = AugmentConfig(hflip=True, max_shift=2)
    out = augment(images, cfg, torch.Generator(device="cuda").manual_seed(0))
    again = augment(images, cfg, torch.Generator(device="cuda").manual_seed(0))
    assert out.device.type == "cuda" and out.dtype == torch.uint8 and torch.equal(out, again)
    bright = (out[:, 0] == 255).nonzero()
    assert len(bright) == 256  # every image keeps its one pixel: whole images move, nothing is cut
    rows, cols = bright[:, 1], bright[:, 2]
    assert ((rows - 5).abs() <= 2).all()
    near_left, near_right = (cols - 3).abs() <= 2, (cols - 8).abs() <= 2
    assert (near_left | near_right).all() and near_left.any() and near_right.any()


def test_train_stage_on_the_gpu_writes_a_model_the_cpu_serves_alike(prepared):
    cfg = load_config(overrides={**CUDA, "train.epochs": 4, "train.batch_size": 16})
    result = train.run(cfg)
    assert mlflow.get_run(result.run_id).data.tags["runtime"] == "cuda/bf16"
    assert result.metrics["val_accuracy"] > 0.8  # three easy classes (1.0 on the CPU): it learned on the GPU

    model, _ = load_model(cfg.paths.model_file)  # a CPU model from a GPU run
    test = load_split(cfg.paths.processed, "test")
    cpu_logits, cpu_attention, _, _ = predict_batches(model, test.images, 64, select_runtime("cpu", "fp32"))
    gpu = select_runtime("cuda", "bf16")
    gpu_logits, gpu_attention, _, _ = predict_batches(gpu.prepare(copy.deepcopy(model)), test.images, 64, gpu)
    agreement = (cpu_logits.argmax(1) == gpu_logits.argmax(1)).float().mean().item()
    assert agreement >= 0.95, agreement
    assert (cpu_attention - gpu_attention).abs().max() < 0.05  # bf16 on the GPU, fp32 on the CPU


def test_evaluate_and_export_after_gpu_training(prepared):
    cfg = load_config(overrides={**CUDA, "train.epochs": 2})
    train.run(cfg)
    evaluate.run(cfg)
    export.run(cfg)
    predictions = (cfg.paths.metrics / "predictions.csv").read_text().splitlines()[1:]
    right = sum(actual == predicted for actual, predicted in (row.split(",") for row in predictions))
    assert json.loads((cfg.paths.metrics / "eval.json").read_text())["accuracy"] == pytest.approx(
        right / len(predictions)
    )
    assert json.loads((cfg.paths.metrics / "export.json").read_text())["top1_agreement"] >= 0.999


def test_compiled_training_matches_eager_training(prepared):
    """`train.compile` changes the speed, not the result: the same seeded epochs give the same losses
    (within bf16 rounding), including the short last batch of each epoch."""
    meta = json.loads((prepared.paths.processed / "meta.json").read_text())
    split = load_split(prepared.paths.processed, "train")
    runtime = select_runtime("cuda", "bf16")
    data = TensorSplit(split.images.to(runtime.device), split.labels.to(runtime.device))
    losses = {}
    for compiled in (False, True):
        cfg = load_config(overrides={  # no dropout: compiled code draws its random masks differently
            **CUDA, "train.compile": compiled, "train.batch_size": 20, "train.epochs": 2, "model.dropout": 0.0,
        })  # fmt: skip
        assert len(data.labels) % cfg.train.batch_size  # a short last batch
        training = steps.build_training(cfg, meta, runtime, data.labels)
        losses[compiled] = [steps.train_epoch(training, data, cfg.train, runtime, e)["train_loss"] for e in (1, 2)]
    torch.testing.assert_close(torch.tensor(losses[True]), torch.tensor(losses[False]), rtol=0.05, atol=0.02)
    assert losses[False][1] < losses[False][0]  # and it learns


def test_auto_streams_a_split_the_machine_could_hold_but_the_gpu_cannot():
    gpu = torch.device("cuda")
    taken = torch.empty(int(0.9 * torch.cuda.mem_get_info(gpu)[0]), dtype=torch.uint8, device=gpu)
    size = int(1.5 * MEMORY_SHARE * torch.cuda.mem_get_info(gpu)[0])  # over the GPU's share of its free memory
    assert size < MEMORY_SHARE * available_bytes(), "this machine's own memory is too small for the check"
    assert fits_in_memory(size) and not fits_in_memory(size, device=gpu)
    del taken
    torch.cuda.empty_cache()  # back to the driver: PyTorch's allocator keeps freed blocks reserved
    assert fits_in_memory(size, device=gpu)
