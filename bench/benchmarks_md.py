"""BENCHMARKS.md's results section, written from bench/results/run.json between two marker lines."""

from __future__ import annotations

from pathlib import Path

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

# (what, target, measured value from results, whether it is met)
TARGET_ROWS = [
    ("training throughput vs reference", "≥ 3×",
     lambda r: f"{r['training']['speedup']:.2f}×", lambda r: r["training"]["speedup"] >= 3),
    ("training FLOP/s vs matmul limit", "≥ 60 %",
     lambda r: f"{r['training']['share_of_limit']:.0%} of {r['training']['limit']}",
     lambda r: r["training"]["share_of_limit"] >= 0.6),
    ("streamed from local shards vs in memory", "≥ 90 %",
     lambda r: f"{r['training'].get('streamed_vs_memory', 0):.0%}",
     lambda r: r["training"].get("streamed_vs_memory", 0) >= 0.9),
    ("batch inference, 28×28", "≥ 5,000 images/s",
     lambda r: f"{r['inference']['images_per_second']:,.0f} images/s",
     lambda r: r["inference"]["images_per_second"] >= 5000),
]  # fmt: skip
DEFAULT_RUN_ROWS = [
    ("default run: test accuracy", "≥ 93 %",
     lambda d: f"{d['test_accuracy']:.2%}", lambda d: d["test_accuracy"] >= 0.93),
    ("default run: total wall time", "≤ 10 min",
     lambda d: _minutes(d["total_seconds"]), lambda d: d["total_seconds"] <= 600),
    ("default run: outside training", "≤ 10 %",
     lambda d: f"{d['outside_training_share']:.1%} ({d['outside_training_seconds']:.0f} s)",
     lambda d: d["outside_training_share"] <= 0.10),
    ("no-op `dvc repro`", "≤ 3 s",
     lambda d: f"{d['noop_repro_seconds']:.1f} s", lambda d: d["noop_repro_seconds"] <= 3),
]  # fmt: skip


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _target_rows(rows: list, values: dict) -> list[list[str]]:
    return [[what, target, show(values), "yes" if met(values) else "**no**"] for what, target, show, met in rows]


def _throughput_rows(t: dict) -> list[list[str]]:
    reference = ["reference: ImageFolder + DataLoader, NCHW fp32, batch 64", f"{t['reference_images_per_second']:,.0f}"]
    rows = [[*reference, "1.00×"]]
    rows += [[s["change"], f"{s['images_per_second']:,.0f}", f"{s['vs_reference']:.2f}×"] for s in t["ladder"]]
    step = f"**the train stage's step** ({t['runtime']})"
    rows.append([step, f"**{t['pipeline_images_per_second']:,.0f}**", f"**{t['speedup']:.2f}×**"])
    streamed = t["streamed_images_per_second"]
    rows.append(
        ["the same, streamed from shards on disk", f"{streamed:,.0f}", f"{t['speedup'] * t['streamed_vs_memory']:.2f}×"]
    )
    return rows


def results_markdown(results: dict) -> str:
    """The results section: machine, targets, training, inference and the default run."""
    m, t, i, d = results["machine"], results["training"], results["inference"], results["default_run"]
    gpu = f", GPU {m['gpu']}" if m["gpu"] else ", no GPU"
    bf16 = "native bf16" if m["cpu_native_bf16"] else "no native bf16"
    limits = ", ".join(f"{name} {value:,.0f} GFLOP/s" for name, value in results["matmul_gflops"].items())
    rows = _target_rows(TARGET_ROWS, results)
    if d:
        rows += _target_rows(DEFAULT_RUN_ROWS, d)
    parts = [
        f"Measured {results['date']} by `make bench` on: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} "
        f"PyTorch threads, {m['cpu_capability']}, {bf16}), {m['memory_gb']} GB{gpu}; PyTorch {m['torch']}. "
        f"Matrix-multiply limit measured in the same run: {limits}. Throughputs are medians of "
        f"{len(t['runs'])} repeats in fresh processes; the speed-up is the median of the per-repeat ratios.",
        "### Targets\n\n" + _table(["what", "target", "measured", "met"], rows),
        "### Training throughput\n\n" + _table(["", "images/s", "vs reference"], _throughput_rows(t)),
        f"FLOPs per training image (forward + backward, `torch.utils.flop_counter`): "
        f"{t['flops_per_image'] / 1e6:.1f} M; achieved {t['achieved_gflops']:,.0f} GFLOP/s = "
        f"{t['share_of_limit']:.0%} of the {t['limit']} matmul limit. Peak memory of the training step "
        f"process: {t['peak_memory_mb']:,.0f} MB.",
        f"### Inference ({i['runtime']})\n\nBatch {i['batch_size']}: {i['images_per_second']:,.0f} images/s; "
        f"one image: {i['single_image_ms']:.2f} ms (median of {i.get('single_image_calls', 200)} calls).",
    ]
    if d:
        stage_rows = [[name, f"{seconds:.1f} s"] for name, seconds in d["stage_seconds"].items()]
        stage_rows.append(["Prefect flow start-up and process exits", f"{d['flow_overhead_seconds']:.1f} s"])
        total = f"**{_minutes(d['total_seconds'])}**"
        stage_rows.append(["**total** (`python -m flows.training`, what `make run` runs)", total])
        parts.append(
            "### Default run (`make run` on a fresh copy of the project)\n\n"
            + _table(["stage", "wall time"], stage_rows)
            + f"\n\nOf the train stage, {d['train_loop_seconds']:.0f} s are the {d['epochs']} epochs' training steps "
            f"({d['train_images_per_second']:,.0f} images/s) and {d['validation_in_training_seconds']:.0f} s "
            f"their per-epoch validation. Everything else (start-up of each tool, Great Expectations, DVC, "
            f"MLflow logging, evaluation, registration) is {d['outside_training_seconds']:.0f} s, "
            f"{d['outside_training_share']:.1%} of the run. Test accuracy {d['test_accuracy']:.2%} "
            f"(macro-F1 {d['test_macro_f1']:.3f}). Peak memory of the train stage: "
            f"{d['peak_training_memory_mb']:,.0f} MB. A no-op `dvc repro` afterwards: "
            f"{d['noop_repro_seconds']:.1f} s (median of 3)."
        )
    stores = results["store_creation"]
    parts.append(
        f"A project's very first run also creates its stores: MLflow's SQLite store "
        f"{stores['mlflow_store_seconds']:.1f} s, Prefect's database {stores['prefect_database_seconds']:.1f} s "
        "(timed separately above; later runs do not pay them)."
    )
    return "\n\n".join(parts)


def update_benchmarks(path: Path, section: str, markers: tuple[str, str] = (BEGIN, END)) -> None:
    """Replace the text between the `markers` of `path` (or append them) with `section`."""
    begin, end = markers
    text = path.read_text() if path.is_file() else f"# Benchmarks\n\n{begin}\n{end}\n"
    if begin not in text or end not in text:
        text += f"\n{begin}\n{end}\n"
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    path.write_text(f"{head}{begin}\n{section}\n{end}{tail}")
