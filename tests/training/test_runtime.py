import pytest
import torch

from pipeline.core.config import ModelConfig
from pipeline.model.network import AttentionCNN
from pipeline.training.runtime import keep_freed_memory, native_cpu_bf16, predict_batches, select_runtime


def test_auto_precision_on_the_cpu_is_bf16_only_where_the_cpu_computes_it():
    runtime = select_runtime("cpu", "auto")
    assert runtime.device.type == "cpu"
    assert (runtime.amp_dtype == torch.bfloat16) == native_cpu_bf16()
    assert select_runtime("cpu", "fp32").amp_dtype is None
    assert select_runtime("cpu", "bf16").amp_dtype == torch.bfloat16
    # EfficientNet's depthwise convolutions are slower in bf16 on the CPU: auto keeps fp32 for it
    assert select_runtime("cpu", "auto", backbone="efficientnet_lite0").amp_dtype is None
    assert select_runtime("cpu", "bf16", backbone="efficientnet_lite0").amp_dtype == torch.bfloat16


def test_allocator_tuning_takes_effect_on_glibc():
    assert keep_freed_memory() is True


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_batched_prediction_matches_one_pass_and_attention_sums_to_one(precision):
    torch.manual_seed(0)
    runtime = select_runtime("cpu", precision)
    model = runtime.prepare(
        AttentionCNN(
            ModelConfig(
                backbone="seed_cnn",
                pretrained=False,
                widths=[8, 16],
                attention="soft",
                attention_dim=8,
                output_stride=4,
            ),
            1,
            3,
        )
    ).eval()
    images = torch.randint(0, 256, (10, 1, 28, 28), dtype=torch.uint8)
    logits, attention, _, _ = predict_batches(model, images, 4, runtime)
    whole = predict_batches(model, images, 10, runtime).logits
    assert logits.dtype == torch.float32 and logits.shape == (10, 3)
    torch.testing.assert_close(logits, whole, atol=0.05 if precision == "bf16" else 1e-5, rtol=0.05)
    torch.testing.assert_close(attention.flatten(1).sum(1), torch.ones(10))


def test_a_scoring_batch_on_the_cpu_holds_a_million_pixel_values_and_on_a_gpu_sixteen():
    """Large images are scored a few at a time on the CPU, where a batch that stays near the caches
    is faster (bench/speed/scoring_batch.py); a GPU keeps the large batches that keep it busy."""
    from pipeline.training.runtime import SCORING_VALUES, Runtime

    cpu, gpu = Runtime(torch.device("cpu"), None), Runtime(torch.device("cuda"), torch.bfloat16)
    large, small = torch.empty(1, 3, 224, 224), torch.empty(1, 1, 28, 28)
    assert cpu.scoring_batch(large, 512) == SCORING_VALUES["cpu"] // (3 * 224 * 224) < 10
    assert gpu.scoring_batch(large, 512) == SCORING_VALUES["cuda"] // (3 * 224 * 224) > 100
    assert cpu.scoring_batch(small, 512) == gpu.scoring_batch(small, 512) == 512  # small images: at_most
    assert cpu.scoring_batch(torch.empty(1, 3, 2048, 2048)) == 1  # never none
