"""Stage 5, export: the trained model as ONNX for edge devices, checked against PyTorch.

Reads `models/model.pt` and the test split; writes `models/model.onnx` (a dynamic batch of uint8
images N×C×H×W in; `logits` N×classes, `attention` N×h×w, `embedding` N×C and, with a detector,
`novelty` N out) and `metrics/export.json`: the
largest logit difference and the top-1 agreement with PyTorch over `export.parity_images` test
images (a fixed random sample; 0: the whole split), run in onnxruntime, and both runtimes'
throughput. Below `export.min_agreement` the stage fails and keeps no file. `export.quantize: true`
also writes `models/model.int8.onnx` (dynamic int8 weights) with its accuracy next to the float
model's. The numbers go to the model's MLflow run too.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.core.config import Config, load_config
from pipeline.core.errors import PipelineError, run_cli
from pipeline.core.files import atomic_path, file_sha256, write_json
from pipeline.core.tracking import resume_run
from pipeline.data.splits import TensorSplit, load_split
from pipeline.model import onnx_file
from pipeline.model.model_file import ModelInfo, load_model
from pipeline.model.network import AttentionCNN
from pipeline.training.runtime import predict_batches, select_runtime

log = logging.getLogger(__name__)


def export_onnx(model: AttentionCNN, info: ModelInfo, example: torch.Tensor, path: Path) -> None:
    """Write `model` as one self-contained ONNX file with a dynamic batch dimension (traced on
    `example`, uint8 N×C×H×W); its metadata holds the class names and image format."""
    import onnx

    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(
        model.eval(), (example,), str(path), input_names=[onnx_file.INPUT],
        output_names=onnx_file.OUTPUTS[: 4 if model.novelty is not None else 3],
        dynamic_shapes={onnx_file.INPUT: {0: batch}}, dynamo=True, external_data=False, verbose=False,
    )  # fmt: skip
    proto = onnx.load(str(path))
    for key, value in onnx_file.metadata(
        info.classes, info.image_size, info.channels, info.run_id, info.decision, info.novelty, info.bit_depth
    ).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def _timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def accuracy(logits: np.ndarray, labels: np.ndarray, info: ModelInfo) -> float:
    """The share of `labels` that ONNX `logits` answer, by the model's decision rule."""
    answered = info.rule.classes(torch.from_numpy(logits).float().softmax(1).numpy(), info.classes)
    return float((answered == labels).mean())


def _quantized_accuracy(
    source: Path, target: Path, images: np.ndarray, labels: np.ndarray, batch: int, info: ModelInfo
) -> float:  # fmt: skip
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with atomic_path(target) as temporary:
        quantize_dynamic(str(source), str(temporary), weight_type=QuantType.QInt8)
        logits = onnx_file.predict(onnx_file.session(temporary), images, batch)["logits"]
    return accuracy(logits, labels, info)


def parity_sample(split: TensorSplit, size: int) -> TensorSplit:
    """The test images the check runs on: a fixed random `size` of them (0: all), the same every run."""
    if not size or size >= len(split.labels):
        return split
    chosen = torch.randperm(len(split.labels), generator=torch.Generator().manual_seed(0))[:size].sort().values
    return split.subset(chosen)


def novelty_parity(onnx_scores: np.ndarray | None, torch_scores: torch.Tensor | None, info: ModelInfo) -> dict:
    """How far the ONNX file's novelty scores are from PyTorch's, and how often both say "unknown" alike."""
    if onnx_scores is None or info.detector is None:
        return {}
    reference = torch_scores.numpy()
    same = info.detector.unknown(onnx_scores) == info.detector.unknown(reference)
    return {
        "max_abs_novelty_difference": float(np.abs(onnx_scores - reference).max()),
        "unknown_agreement": float(same.mean()),
    }


def run(cfg: Config) -> dict:
    """Export the model to ONNX, compare it with PyTorch on the test split, write the report."""
    paths, settings = cfg.paths, cfg.export
    model, info = load_model(paths.model_file)
    test = parity_sample(load_split(paths.processed, "test", cfg.train.loader), settings.parity_images)
    pixels = test.images[:]  # the sample in memory (read from the shards when the split is streamed)
    images, labels = pixels.numpy(), test.labels.numpy()
    runtime = select_runtime("cpu", "fp32")  # the reference: the float model, as ONNX holds it
    batch = runtime.scoring_batch(pixels, settings.batch_size)
    torch_out, torch_seconds = _timed(predict_batches, model, pixels, batch, runtime)
    reference = torch_out.logits.numpy()

    with atomic_path(paths.onnx_file) as temporary:
        export_onnx(model, info, pixels[:2], temporary)
        loaded = onnx_file.session(temporary)
        outputs, onnx_seconds = _timed(onnx_file.predict, loaded, images, batch)
        logits, attention, novelty = outputs["logits"], outputs["attention"], outputs.get("novelty")
        agreement = float((logits.argmax(1) == reference.argmax(1)).mean())
        if agreement < settings.min_agreement:
            raise PipelineError(
                f"{paths.onnx_file}: the ONNX model agrees with PyTorch on only {agreement:.2%} of "
                f"{len(labels)} test images (export.min_agreement {settings.min_agreement:.2%}); nothing was exported"
            )
    report = {
        "model_sha256": file_sha256(paths.model_file),
        "onnx_sha256": file_sha256(paths.onnx_file),
        "test_images": len(labels),
        "max_abs_logit_difference": float(np.abs(logits - reference).max()),
        "top1_agreement": agreement,
        "attention_shape": list(attention.shape[1:]),
        "onnx_accuracy": accuracy(logits, labels, info),
        **novelty_parity(novelty, torch_out.novelty, info),
        "onnx_images_per_second": round(len(labels) / onnx_seconds),
        "pytorch_fp32_images_per_second": round(len(labels) / torch_seconds),
    }
    if settings.quantize:
        report["int8_accuracy"] = _quantized_accuracy(
            paths.onnx_file, paths.quantized_onnx_file, images, labels, batch, info
        )
        report["int8_accuracy_change"] = report["int8_accuracy"] - report["onnx_accuracy"]
        log.info(
            "export: %s, test accuracy %.4f%% (%+.2f points against the float model's)", paths.quantized_onnx_file,
            100 * report["int8_accuracy"], 100 * report["int8_accuracy_change"],
        )  # fmt: skip
    else:
        paths.quantized_onnx_file.unlink(missing_ok=True)
    write_json(paths.metrics / "export.json", report)
    with resume_run(cfg, info.run_id):
        import mlflow

        numbers = {k: v for k, v in report.items() if isinstance(v, float | int)}
        mlflow.log_metrics({k if k.startswith("onnx") else f"onnx_{k}": v for k, v in numbers.items()})
    log.info(
        "export: %s, top-1 agreement %.4f%%, max logit difference %.2e, %d vs %d images/s (onnxruntime vs PyTorch)",
        paths.onnx_file, 100 * agreement, report["max_abs_logit_difference"],
        report["onnx_images_per_second"], report["pytorch_fp32_images_per_second"],
    )  # fmt: skip
    return report


def main() -> None:
    run(load_config())


if __name__ == "__main__":
    run_cli(main)
