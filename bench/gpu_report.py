"""BENCHMARKS.md's GPU section, written from bench/gpu.json (what `bench/gpu.sh` measured on a lent GPU).

python -m bench.gpu_report [bench/gpu.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.report import _minutes, _table, update_benchmarks
from pipeline.core.paths import project_root

MARKERS = ("<!-- gpu:begin -->", "<!-- gpu:end -->")
TARGET_SECONDS, TARGET_SHARE = 60, 0.40


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f} s"


def training_rows(results: dict) -> list[list[str]]:
    rows = []
    for key, run in results.items():
        if not key.startswith("training: ") or "epochs" not in run:
            continue
        model = f"{run['widths']} × {run['convs_per_block']}"
        rows.append([
            key.removeprefix("training: "), model, str(run["batch_size"]), "on" if run["compile"] else "off",
            str(len(run["epochs"])),
            f"{run['images_per_second']:,.0f}", f"{run['flops_per_image'] / 1e9:.2f}",
            f"{run['achieved_gflops'] / 1000:,.0f}", f"{run['share_of_bf16_limit']:.1%}",
            f"{run['first_epoch_seconds']:.1f} s", f"{run['training_seconds']:.1f} s", f"{run['test_accuracy']:.2%}",
            _seconds(run["seconds_to_94"]), _seconds(run["seconds_to_95"]),
        ])  # fmt: skip
    return rows


def flow_rows(results: dict) -> list[list[str]]:
    rows = []
    for key, run in results.items():
        if not key.startswith("flow: ") or "stage_seconds" not in run:
            continue
        stages = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in run["stage_seconds"].items())
        rows.append([
            key.removeprefix("flow: "), f"**{_minutes(run['total_seconds'])}**", stages,
            f"{run['train_loop_seconds']:.0f} s ({run['train_images_per_second']:,.0f} images/s)",
            f"{run['test_accuracy']:.2%}",
        ])  # fmt: skip
    return rows


def gpu_markdown(results: dict) -> str:
    """The GPU section: card, limits, targets, training runs, flows, CUDA tests."""
    m, limits = results["machine"], results["matmul_gflops"]
    preset, flow = results["training: gpu preset"], results["flow: gpu preset"]
    runs = [(preset["test_accuracy"], preset["training_seconds"]), (flow["test_accuracy"], flow["train_loop_seconds"])]
    in_time = sum(accuracy >= 0.95 and seconds <= TARGET_SECONDS for accuracy, seconds in runs)
    share = preset["share_of_bf16_limit"]
    targets = [
        ["≥ 95 % test accuracy within ≤ 60 s of training (GPU preset)", "≥ 95 % in ≤ 60 s",
         f"{preset['test_accuracy']:.2%} after {preset['training_seconds']:.0f} s (95 % at "
         f"{_seconds(preset['seconds_to_95'])}); in the flow: {flow['test_accuracy']:.2%} after "
         f"{flow['train_loop_seconds']:.0f} s", f"in {in_time} of {len(runs)} runs"],
        ["training FLOP/s vs bf16 matmul limit (GPU preset)", f"≥ {TARGET_SHARE:.0%}",
         f"{share:.0%} ({preset['achieved_gflops'] / 1000:,.0f} TFLOP/s)",
         "yes" if share >= TARGET_SHARE else "**no**"],
        ["whole training flow with the preset, from nothing", "measured", _minutes(flow["total_seconds"]), "yes"],
    ]  # fmt: skip
    tests = results.get("cuda_tests", {})
    header = [
        "run", "widths × convs", "batch", "compile", "epochs", "images/s", "GFLOP/image", "TFLOP/s", "of bf16 limit",
        "first epoch", "training", "test accuracy", "to 94 %", "to 95 %",
    ]  # fmt: skip
    parts = [
        f"Measured {results['date']} by `bench/gpu.sh` on one {results['card']} (driver, memory, max SM clock), "
        f"{m['cores']} CPU cores; PyTorch {m['torch']}, Python {m['python']}. Matrix-multiply limit "
        f"(8192³, same machine): bf16 {limits['bf16'] / 1000:,.0f} TFLOP/s, fp32 {limits['fp32'] / 1000:,.0f} "
        f"TFLOP/s. One run of each; the calls are listed in `bench/gpu.json`.",
        "### Targets\n\n" + _table(["what", "target", "measured", "met"], targets),
        "### Training on the GPU (`bench.time_to_accuracy`: the train stage's own step, test accuracy after "
        "every epoch; times are training only)\n\n" + _table(header, training_rows(results)),
        "### The whole training flow (`python -m flows.training`, fresh project, every stage runs, stores "
        "created)\n\n" + _table(["params", "total", "stages", "training loop", "test accuracy"], flow_rows(results)),
        f"CUDA tests (`pytest -m cuda`, `tests/test_cuda.py`): {tests.get('summary', 'not run')}.",
    ]
    return "\n\n".join(parts)


def main() -> None:
    import json

    path = Path(sys.argv[1]) if len(sys.argv) > 1 else project_root() / "bench" / "gpu.json"
    update_benchmarks(project_root() / "BENCHMARKS.md", gpu_markdown(json.loads(path.read_text())), MARKERS)


if __name__ == "__main__":
    main()
