"""Scoring batches on the CPU: how fast a split is scored against the pixel values per forward pass
(`SCORING_VALUES` in `pipeline/training/runtime.py`), evaluate's blur fill in one 2-D pass against
two 1-D passes (`attention_checks.blurred`), the memory of a served request in one pass against
the served model's scoring batches (`pyfunc.SERVING`) under a memory cgroup's limit, and scoring
with batch norms folded into the convolutions (`AttentionCNN.fold_batch_norms`, what `load_model`
gives every stage) against without, and the served model's layout (`pyfunc.SERVING`: fp32, channels
last) against the layout a model loads in.

    python -m bench.speed.scoring_batch [--values 16,18,20,22,24]
        [--parts throughput,blur,memory,folding,layout] [--limit-mb 3072]

For each shape (Fashion-MNIST's 28 px; 128-px grey and 224-px RGB images with the small CNN; 128-px
RGB with EfficientNet-Lite0) a model of params.yaml's config with the data section set so (random
weights: throughput does not depend on them), scored as the stages score a split
(`predict_batches`, up to `evaluate.batch_size` images a pass), in the precision `auto` picks here
and in fp32. The request: 256 RGB images at 224 px (what the server accepts at most), a model of
that size in fp32 as served, in a child process in a fresh memory cgroup (root; the cgroup's own
peak, not the process's ru_maxrss). Folding: each shape's model with batch-norm statistics of its
own (train-mode passes over random images), at the CPU scoring batch, median of `FOLD_REPEATS`
alternating timings, with the largest logit difference and the share of top-1 answers kept. Layout:
the same, fp32, the model and its inputs contiguous (NCHW) against channels last (NHWC).
Writes (updates) `bench/results/scoring_batch.json`; prints markdown tables.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time

import torch
import yaml
from torchvision.transforms.v2 import functional

from bench import RESULTS
from bench.machine import describe
from pipeline.core.config import Config, ModelConfig, fill_auto
from pipeline.core.paths import project_root
from pipeline.model.attention_checks import blur_kernel, blurred
from pipeline.model.network import AttentionCNN
from pipeline.model.pyfunc import SERVING
from pipeline.training.runtime import Runtime, predict_batches, select_runtime

AT_MOST = 512  # evaluate.batch_size
FOLD_REPEATS = 5
PARTS = "throughput,blur,memory,folding,layout"
SHAPES = {  # name: image_size, channels, data.source, model changes
    "Fashion-MNIST 28 px grey": (28, 1, "fashion-mnist", {}),
    "128 px grey": (128, 1, "imagefolder", {}),
    "224 px RGB": (224, 3, "imagefolder", {}),
    "128 px RGB, EfficientNet-Lite0": (128, 3, "imagefolder", {"pretrained": True}),
}


def model_for(size: int, channels: int, source: str, changes: dict) -> tuple[AttentionCNN, str]:
    raw = yaml.safe_load((project_root() / "params.yaml").read_text())
    raw["data"].update(image_size=size, channels=channels, source=source, path="unused")
    raw["model"].update(changes)
    filled, _ = fill_auto(Config(**raw))
    torch.manual_seed(0)
    model = AttentionCNN(ModelConfig(**filled["model"]), channels, 2)
    return model, filled["model"]["backbone"]


def images_per_second(model, images: torch.Tensor, batch: int, runtime) -> float:
    predict_batches(model, images[:batch], batch, runtime)  # warm-up
    start = time.perf_counter()
    predict_batches(model, images, batch, runtime)
    return len(images) / (time.perf_counter() - start)


def blur_seconds(count: int = 100, size: int = 224) -> dict:
    """Seconds to blur `count` grey `size`-px images as evaluate does, in one 2-D pass and in two."""
    images = torch.randint(0, 256, (count, 1, size, size), dtype=torch.uint8)
    kernel, sigma = blur_kernel(size)
    start = time.perf_counter()
    reference = functional.gaussian_blur(images, [kernel, kernel], [sigma, sigma])
    two_d = time.perf_counter() - start
    start = time.perf_counter()
    separable = blurred(images)
    return {
        "images": count, "size": size, "kernel": kernel, "one_2d_pass_s": two_d,
        "two_1d_passes_s": time.perf_counter() - start,
        "max_difference": int((reference.int() - separable.int()).abs().max()),
    }  # fmt: skip


REQUEST = """
import sys, torch
from bench.speed.scoring_batch import model_for
from pipeline.model.pyfunc import SERVING
from pipeline.training.runtime import predict_batches
model, _ = model_for(224, 3, "imagefolder", {})
model = SERVING.prepare(model)  # as the served model loads
images = torch.randint(0, 256, (256, 3, 224, 224), dtype=torch.uint8)
batch = len(images) if sys.argv[1] == "one pass" else SERVING.scoring_batch(images, len(images))
predict_batches(model, images, batch, SERVING)
"""


def request_memory(limit_mb: int) -> dict:
    """A 256-image 224-px request's forward passes in one pass and in the served model's batches, each
    in a fresh cgroup of `limit_mb`: exit code (137: killed at the limit), seconds, the cgroup's peak."""
    from bench.speed.memory_limit import cgroup_unavailable, memory_cgroup

    if why := cgroup_unavailable():
        return {"skipped": why}
    result: dict = {"limit_mb": limit_mb}
    for way in ("one pass", "served batches"):
        with memory_cgroup(limit_mb * 2**20) as cgroup:
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", REQUEST, way], cwd=project_root(), preexec_fn=cgroup.enter,
                                  capture_output=True, check=False)  # fmt: skip
            result[way] = {"exit_code": -done.returncode if done.returncode < 0 else done.returncode,
                           "seconds": time.perf_counter() - start, "peak_mb": cgroup.peak_bytes() / 2**20}  # fmt: skip
    return result


def markdown(output: dict) -> str:
    powers = " · ".join(dict.fromkeys(r["values"] for r in output["rows"]))
    lines = [f"| shape | runtime | images/s (batch) at {powers} pixel values a pass |", "|---|---|---|"]
    groups: dict = {}
    for r in output["rows"]:
        groups.setdefault((r["shape"], r["runtime"]), []).append(f"{r['images_per_second']:,.0f} ({r['batch']})")
    lines += [f"| {shape} | {runtime} | {' · '.join(cells)} |" for (shape, runtime), cells in groups.items()]
    blur = output["blur"]
    lines.append(
        f"\nBlur fill, {blur['images']} grey {blur['size']}-px images (kernel {blur['kernel']}): one 2-D pass "
        f"{blur['one_2d_pass_s']:.1f} s, two 1-D passes {blur['two_1d_passes_s']:.2f} s "
        f"(largest difference {blur['max_difference']} grey level)."
    )
    memory = output.get("request_memory", {})
    if "limit_mb" in memory:
        ways = "; ".join(f"{way}: exit {r['exit_code']}, {r['seconds']:.1f} s, peak {r['peak_mb']:,.0f} MB"
                         for way, r in memory.items() if way != "limit_mb")  # fmt: skip
        lines.append(f"\nA request of 256 RGB 224-px images under a {memory['limit_mb']} MB cgroup limit: {ways}.")
    return "\n".join(lines)


def throughput(powers: list[int]) -> list[dict]:
    """Images per second of each shape, runtime and pixel values a pass."""
    rows = []
    for name, (size, channels, source, changes) in SHAPES.items():
        model, backbone = model_for(size, channels, source, changes)
        per_image = size * size * channels
        largest = max(1, min(AT_MOST, 2 ** max(powers) // per_image))
        images = torch.randint(0, 256, (2 * largest, channels, size, size), dtype=torch.uint8)
        runtimes = {r.name: r for r in (select_runtime("cpu", p, backbone=backbone) for p in ("auto", "fp32"))}
        for runtime in runtimes.values():  # EfficientNet: fp32 either way
            prepared = runtime.prepare(model).eval()
            for power in powers:
                batch = max(1, min(AT_MOST, 2**power // per_image))
                rate = images_per_second(prepared, images, batch, runtime)
                rows.append({"shape": name, "runtime": runtime.name, "values": f"2**{power}", "batch": batch,
                             "images_per_second": rate})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    return rows


def folding(repeats: int = FOLD_REPEATS) -> dict:
    """Images per second of each shape and runtime at the CPU scoring batch, batch norms as trained
    and folded, and what folding changes in the logits."""
    rows = []
    for name, (size, channels, source, changes) in SHAPES.items():
        model, backbone = model_for(size, channels, source, changes)
        count = max(64, min(2048, 2**24 // (size * size * channels)))
        images = torch.randint(0, 256, (count, channels, size, size), dtype=torch.uint8)
        with torch.no_grad():
            for start in range(0, min(count, 256), 32):  # batch-norm statistics of its own
                model(images[start : start + 32])
        plain = model.eval()
        folded = copy.deepcopy(plain).fold_batch_norms()
        runtimes = {r.name: r for r in (select_runtime("cpu", p, backbone=backbone) for p in ("auto", "fp32"))}
        for runtime in runtimes.values():
            models = {"plain": runtime.prepare(plain), "folded": runtime.prepare(folded)}
            batch = runtime.scoring_batch(images, AT_MOST)
            rates: dict = {way: [] for way in models}
            for _ in range(repeats):
                for way, scored in models.items():
                    rates[way].append(images_per_second(scored, images, batch, runtime))
            logits = {way: predict_batches(m, images, batch, runtime).logits for way, m in models.items()}
            rows.append({
                "shape": name, "runtime": runtime.name, "batch": batch,
                "plain_images_per_second": statistics.median(rates["plain"]),
                "folded_images_per_second": statistics.median(rates["folded"]),
                "max_logit_difference": float((logits["plain"] - logits["folded"]).abs().max()),
                "top1_kept": float((logits["plain"].argmax(1) == logits["folded"].argmax(1)).float().mean()),
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    return {"machine": describe(), "rows": rows}


def layout(repeats: int = FOLD_REPEATS) -> dict:
    """Images per second of each shape in fp32 at the CPU scoring batch, the model and its inputs
    contiguous and channels last, and what the layout changes in the logits."""
    rows = []
    for name, (size, channels, source, changes) in SHAPES.items():
        model, _ = model_for(size, channels, source, changes)
        count = max(64, min(2048, 2**24 // (size * size * channels)))
        images = torch.randint(0, 256, (count, channels, size, size), dtype=torch.uint8)
        runtimes = {"contiguous": Runtime(torch.device("cpu"), None, channels_last=False), "channels last": SERVING}
        batch = SERVING.scoring_batch(images, AT_MOST)
        rates: dict = {way: [] for way in runtimes}
        for _ in range(repeats):
            for way, runtime in runtimes.items():  # `prepare` changes the model in place: each way in turn
                rates[way].append(images_per_second(runtime.prepare(model).eval(), images, batch, runtime))
        logits = {way: predict_batches(r.prepare(model), images, batch, r).logits for way, r in runtimes.items()}
        rows.append({
            "shape": name, "batch": batch, **{f"{way} images/s": statistics.median(rates[way]) for way in runtimes},
            "max_logit_difference": float((logits["contiguous"] - logits["channels last"]).abs().max()),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return {"machine": describe(), "rows": rows}


def layout_markdown(output: dict) -> str:
    lines = ["| shape (batch), fp32 | images/s contiguous | channels last | change | largest logit difference |",
             "|---|---|---|---|---|"]  # fmt: skip
    for r in output["rows"]:
        before, after = r["contiguous images/s"], r["channels last images/s"]
        lines.append(f"| {r['shape']} ({r['batch']}) | {before:,.0f} | {after:,.0f} | {after / before - 1:+.0%} "
                     f"| {r['max_logit_difference']:.1e} |")  # fmt: skip
    return "\n".join(lines)


def folding_markdown(output: dict) -> str:
    lines = [
        "| shape | runtime (batch) | images/s as trained | batch norms folded | change | largest logit difference "
        "| top-1 kept |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in output["rows"]:
        lines.append(
            f"| {r['shape']} | {r['runtime']} ({r['batch']}) | {r['plain_images_per_second']:,.0f} "
            f"| {r['folded_images_per_second']:,.0f} "
            f"| {r['folded_images_per_second'] / r['plain_images_per_second'] - 1:+.0%} "
            f"| {r['max_logit_difference']:.1e} | {r['top1_kept']:.2%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.speed.scoring_batch", description=__doc__.splitlines()[0])
    parser.add_argument("--values", default="16,18,20,22,24", help="powers of 2 of pixel values per pass")
    parser.add_argument("--parts", default=PARTS, help="which to measure (the others kept)")
    parser.add_argument("--limit-mb", type=int, default=3072, help="the request's memory cgroup limit")
    args = parser.parse_args()
    parts = args.parts.split(",")
    path = RESULTS / "scoring_batch.json"
    output = json.loads(path.read_text()) if path.is_file() else {}
    if "throughput" in parts:
        output |= {"machine": describe(), "rows": throughput([int(p) for p in args.values.split(",")])}
    if "blur" in parts:
        output["blur"] = blur_seconds()
    if "memory" in parts:
        output["request_memory"] = request_memory(args.limit_mb)
    if "folding" in parts:
        output["folding"] = folding()
    if "layout" in parts:
        output["layout"] = layout()
    path.write_text(json.dumps(output, indent=2) + "\n")
    print(markdown(output))
    if "folding" in output:
        print(folding_markdown(output["folding"]))
    if "layout" in output:
        print(layout_markdown(output["layout"]))


if __name__ == "__main__":
    main()
