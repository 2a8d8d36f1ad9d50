"""Images in, answers out, timed: batch prediction over a PNG folder, the served model over HTTP,
and the demo page in a real browser.

    python -m bench.serving.predict_serve_demo [--model models:/attention-classifier@champion] [--images 20000]
                                               [--requests 300]

Needs a registered model (run the pipeline first). Writes `bench/results/predict_serve_demo.json`; prints a table.
- Batch: the first `--images` Fashion-MNIST test images as 28×28 PNG files in a folder, then
  `python -m pipeline.predict FOLDER --out CSV` in its own process: images per second over the
  whole command (start-up and model loading included) and as the command reports it.
- HTTP: `python -m pipeline.serve`, then `--requests` sequential requests of one base64 PNG each
  (decoding included): median and 95th-percentile latency at the client.
- Page: `python -m pipeline.demo` in Debian's Chromium driven by Playwright: the time from an
  upload to the top 5 shown, over 5 uploads.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from PIL import Image

from bench import RESULTS
from pipeline.core.paths import project_root
from pipeline.data.fashion_mnist import read_split
from tests.servers import free_port, make_target

PROJECT = project_root()
MARK_SEEN = "() => { const t = document.querySelector('#top5'); t.dataset.seen = t.innerText; }"
CHANGED = "() => { const t = document.querySelector('#top5'); return t.innerText !== t.dataset.seen; }"


def write_pngs(folder: Path, count: int) -> list[Path]:
    images, _ = read_split(PROJECT / "data" / "fashion-mnist", "test")
    paths = []
    for index in range(count):
        path = folder / f"{index % 10}" / f"{index:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[index % len(images)]).save(path)
        paths.append(path)
    return paths


def batch(folder: Path, model: str, count: int) -> dict:
    out = folder.parent / "predictions.csv"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipeline.predict", str(folder), "--out", str(out), "--model", model],
                          cwd=PROJECT, capture_output=True, text=True, check=True)  # fmt: skip
    seconds = time.perf_counter() - started
    reported = done.stderr.strip().splitlines()[-1]
    rate = float(reported.split("(")[-1].split(" images/s")[0].replace(",", ""))
    return {"images": count, "command_seconds": round(seconds, 2),
            "images_per_second_whole_command": round(count / seconds), "images_per_second_reported": rate}  # fmt: skip


def http(paths: list[Path], model: str, count: int, log: Path) -> dict:
    port = free_port()
    bodies = [{"inputs": [base64.b64encode(path.read_bytes()).decode()]} for path in paths[:count]]
    with make_target("serve", f"http://127.0.0.1:{port}/ping", log, SERVE_PORT=str(port), SERVE_MODEL=model):
        url = f"http://127.0.0.1:{port}/invocations"
        with requests.Session() as session:
            for body in bodies[:20]:  # warm-up
                session.post(url, json=body, timeout=30).raise_for_status()
            latencies = []
            for body in bodies:
                started = time.perf_counter()
                session.post(url, json=body, timeout=30).raise_for_status()
                latencies.append(1000 * (time.perf_counter() - started))
    latencies.sort()
    return {"requests": len(latencies), "median_ms": round(statistics.median(latencies), 2),
            "p95_ms": round(latencies[int(0.95 * len(latencies)) - 1], 2)}  # fmt: skip


def page(paths: list[Path], log: Path) -> dict:
    from playwright.sync_api import sync_playwright

    port = free_port()
    seconds = []
    with make_target("demo", f"http://127.0.0.1:{port}/", log, timeout=180, DEMO_PORT=str(port)):
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            view = browser.new_page(viewport={"width": 1400, "height": 1000})
            view.goto(f"http://127.0.0.1:{port}/")
            view.wait_for_selector("#upload input[type=file]", state="attached", timeout=60_000)
            for path in paths[:5]:
                view.evaluate(MARK_SEEN)
                started = time.perf_counter()
                view.set_input_files("#upload input[type=file]", str(path))
                view.wait_for_function(CHANGED)
                seconds.append(time.perf_counter() - started)
            browser.close()
    return {"uploads": len(seconds), "median_s": round(statistics.median(seconds), 2), "max_s": round(max(seconds), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.serving.predict_serve_demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model", default="models:/attention-classifier@champion")
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work) / "pngs"
        paths = write_pngs(folder, args.images)
        result = {
            "batch": batch(folder, args.model, args.images),
            "http": http(paths, args.model, args.requests, Path(work) / "serve.log"),
            "page": page(paths, Path(work) / "demo.log"),
        }
    (RESULTS / "predict_serve_demo.json").write_text(json.dumps(result, indent=2) + "\n")
    b, h, p = result["batch"], result["http"], result["page"]
    print("| what | measured | target |\n|---|---|---|")
    print(
        f"| batch prediction, {b['images']:,} PNGs 28×28 | {b['images_per_second_reported']:,.0f} images/s "
        f"({b['images_per_second_whole_command']:,} over the whole command, {b['command_seconds']} s) | ≥ 3,000 |"
    )
    print(f"| served single image over HTTP | median {h['median_ms']} ms, p95 {h['p95_ms']} ms | ≤ 20 ms |")
    print(f"| the page answers an upload | median {p['median_s']} s, max {p['max_s']} s | ≤ 1 s |")


if __name__ == "__main__":
    main()
