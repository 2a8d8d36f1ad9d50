"""BENCHMARKS.md's GPU section, written from bench/results/gpu.json (what `bench/gpu/run.sh` measured on a lent GPU).

python -m bench.gpu.benchmarks_section [bench/results/gpu.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench import RESULTS
from bench.benchmarks_md import _minutes, _table, update_benchmarks
from pipeline.core.paths import project_root

MARKERS = ("<!-- gpu:begin -->", "<!-- gpu:end -->")
TARGET_ACCURACY, TARGET_SECONDS, TARGET_SHARE, TARGET_FLOW = 0.95, 30, 0.40, 90
SEED_PREFIX, ABLATION_PREFIX = "preset, seed ", "ablation: "


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f} s"


def _met(condition: bool) -> str:
    return "yes" if condition else "**no**"


def training_rows(results: dict, prefix: str) -> list[list[str]]:
    """One row per `bench.gpu.time_to_accuracy` run whose key starts with `prefix`."""
    rows = []
    for key, run in results.items():
        if key.startswith(prefix) and "epochs" in run:
            rows.append([
                key.removeprefix(prefix), f"{run['test_accuracy']:.2%}", _seconds(run["seconds_to_94"]),
                _seconds(run["seconds_to_95"]), f"{run['training_seconds']:.1f} s",
                f"{run['first_epoch_seconds']:.1f} s", f"{run['images_per_second']:,.0f}",
            ])  # fmt: skip
        elif key.startswith(prefix):
            rows.append([key.removeprefix(prefix), *(["—"] * 5), next(iter(run.values()))])
    return rows


def lever_rows(results: dict) -> list[list[str]]:
    rows = []
    for key in ("step levers", "compile levers"):
        if "variants" not in results.get(key, {}):
            continue
        for row in results[key]["variants"]:
            if "images_per_second" not in row:
                rows.append([row["variant"], "—", "—", "—", row.get("error", "")[:200]])
                continue
            rows.append([
                row["variant"], str(row["batch_size"]), f"{row['images_per_second']:,.0f}", f"{row['tflops']:,.0f}",
                f"{row['share_of_bf16_limit']:.1%}",
            ])  # fmt: skip
    return rows


def flow_row(flow: dict) -> list[str]:
    stages = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in flow["stage_seconds"].items())
    return [
        f"**{_minutes(flow['total_seconds'])}**", stages,
        f"{flow['train_loop_seconds']:.0f} s ({flow['train_images_per_second']:,.0f} images/s)",
        f"{flow['test_accuracy']:.2%}",
    ]  # fmt: skip


def targets(results: dict) -> list[list[str]]:
    seeds, flow = results["preset seeds"], results["flow: preset"]
    levers = {row["variant"]: row for row in results["step levers"]["variants"] if "share_of_bf16_limit" in row}
    best = max(levers.values(), key=lambda row: row["share_of_bf16_limit"])
    to_95 = [value for value in seeds["seconds_to_95"] if value is not None]
    accurate = sum(accuracy >= TARGET_ACCURACY for accuracy in seeds["test_accuracy"])
    in_time = sum(value <= TARGET_SECONDS for value in to_95)
    tests = results.get("cuda_tests", {})
    return [
        [f"≥ {TARGET_ACCURACY:.0%} in each of {len(seeds['seeds'])} seeds (GPU preset)", "each seed",
         f"{seeds['test_accuracy_mean']:.2%} ± {seeds['test_accuracy_std']:.2%} "
         f"({', '.join(f'{a:.2%}' for a in seeds['test_accuracy'])})", _met(accurate == len(seeds["seeds"]))],
        [f"… each within {TARGET_SECONDS} s of training", f"≤ {TARGET_SECONDS} s",
         ", ".join(_seconds(value) for value in seeds["seconds_to_95"]),
         _met(in_time == len(seeds["seeds"])) + f" ({in_time} of {len(seeds['seeds'])})"],
        ["training FLOP/s vs bf16 matmul limit", f"≥ {TARGET_SHARE:.0%}",
         f"preset (batch 512) {levers['eager']['share_of_bf16_limit']:.0%}; best lever: {best['variant']} "
         f"{best['share_of_bf16_limit']:.0%}", _met(best["share_of_bf16_limit"] >= TARGET_SHARE)],
        ["whole training flow with the preset, from nothing", f"≤ {TARGET_FLOW} s",
         _minutes(flow["total_seconds"]), _met(flow["total_seconds"] <= TARGET_FLOW)],
        ["`torchrun --nproc_per_node 1`, NCCL, trains like the plain run", "passes",
         tests.get("summary", "not run"), _met(tests.get("exit_code") == 0)],
    ]  # fmt: skip


def gpu_markdown(results: dict) -> str:
    """The GPU section: card, limits, targets, seeds, ablations, speed levers, the flow, CUDA tests."""
    m, limits = results["machine"], results["matmul_gflops"]
    run_header = ["run", "test accuracy", "to 94 %", "to 95 %", "training", "first epoch", "images/s"]
    parts = [
        f"Measured {results['date']} by `bench/gpu/run.sh` on one {results['card']} (driver, memory, max SM clock), "
        f"{m['cores']} CPU cores; PyTorch {m['torch']}, Python {m['python']}. Matrix-multiply limit "
        f"(8192³, same machine): bf16 {limits['bf16'] / 1000:,.0f} TFLOP/s, fp32 {limits['fp32'] / 1000:,.0f} "
        f"TFLOP/s. The calls are listed in `bench/results/gpu.json`; the preset is `params.gpu.yaml`.",
        "### Targets\n\n" + _table(["what", "target", "measured", "met"], targets(results)),
        "### The preset, three seeds (`bench.gpu.time_to_accuracy`: the train stage's own step, test accuracy after "
        "every epoch; times are training only, each run in a fresh process)\n\n"
        + _table(["seed", *run_header[1:]], training_rows(results, SEED_PREFIX)),
        "### What each lever adds (seed 0, against the preset's seed 0)\n\n"
        + _table(run_header, training_rows(results, ABLATION_PREFIX)),
        "### Speed levers on the preset's training step (`bench.gpu.levers`, one process, "
        f"{results['step levers']['flops_per_image'] / 1e9:.2f} GFLOP per training image)\n\n"
        + _table(["variant", "batch", "images/s", "TFLOP/s", "of bf16 limit"], lever_rows(results)),
        "### The whole training flow (`python -m flows.training --preset params.gpu.yaml`, fresh project, every "
        "stage runs, stores created)\n\n"
        + _table(["total", "stages", "training loop", "test accuracy"], [flow_row(results["flow: preset"])]),
    ]
    return "\n\n".join(parts)


def main() -> None:
    import json

    path = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS / "gpu.json"
    update_benchmarks(project_root() / "BENCHMARKS.md", gpu_markdown(json.loads(path.read_text())), MARKERS)


if __name__ == "__main__":
    main()
