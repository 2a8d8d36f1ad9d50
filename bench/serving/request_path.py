"""Where a served request's milliseconds go: the whole request over HTTP against its parts.

    python -m bench.serving.request_path [--model models:/attention-classifier@champion] [--requests 300] [--rounds 3]

Needs a registered model (run the pipeline first). In `--rounds` alternating rounds of `--requests`
one-image requests (Fashion-MNIST test images as base64 PNG, the server's logging on as configured):
- `http`: `python -m pipeline.serve` (what `make serve` runs), sequential requests from one client;
- `ping`: `GET /ping` on the same server: HTTP and the web framework alone;
- `answer, back to back`: `pipeline.serve.answer` (parse, decode, the model, the log's records) in
  this process with a worker's share of the cores, one request after the other;
- `answer after 5 ms idle`: the same with 5 ms of sleep before each, as a worker waits between the
  requests of one client: what waking costs (caches, the core's clock, the scheduler);
- `answer in a worker process`: the same requests handed to the server's worker processes
  (`serve.Gate`) from an event loop and awaited, as the server does: the answer plus the hand-off
  there and back, without HTTP.
Writes `bench/results/request_path.json`; prints a table of medians (95th percentiles).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

from bench import RESULTS
from bench.serving.predict_serve_demo import write_pngs
from pipeline import serve
from pipeline.core.paths import project_root
from tests.servers import free_port, make_target

IDLE = 0.005  # seconds before each request of the idle variant


def timed(call: Callable[[int], object], count: int, pause: float = 0.0) -> list[float]:
    """Milliseconds of `count` calls (after 20 to warm up), each after `pause` seconds of sleep."""
    for index in range(20):
        call(index)
    latencies = []
    for index in range(count):
        if pause:
            time.sleep(pause)
        started = time.perf_counter()
        call(index)
        latencies.append(1000 * (time.perf_counter() - started))
    return latencies


def summary(latencies: list[float]) -> dict:
    ordered = sorted(latencies)
    p95 = ordered[int(0.95 * len(ordered)) - 1]
    return {"median_ms": round(statistics.median(ordered), 2), "p95_ms": round(p95, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serving.request_path", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/attention-classifier@champion")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import mlflow
    import torch

    work = Path(tempfile.mkdtemp())
    bodies = [json.dumps({"inputs": [base64.b64encode(path.read_bytes()).decode()]}).encode()
              for path in write_pngs(work / "pngs", args.requests)]  # fmt: skip
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // serve.Limits().workers))  # a worker's share, as in serve
    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{project_root() / 'mlflow.db'}"))
    model = mlflow.pyfunc.load_model(args.model)
    port = free_port()
    parts = ("http", "ping", "answer in a worker process", "answer, back to back", "answer after 5 ms idle")
    rounds: dict[str, list[float]] = {part: [] for part in parts}
    with make_target("serve", f"http://127.0.0.1:{port}/ping", work / "serve.log", SERVE_PORT=str(port),
                     SERVE_MODEL=args.model), requests.Session() as session:  # fmt: skip
        url = f"http://127.0.0.1:{port}"

        def post(index: int) -> None:
            body, json_type = bodies[index % len(bodies)], {"Content-Type": "application/json"}
            session.post(f"{url}/invocations", data=body, headers=json_type).raise_for_status()

        def ping(index: int) -> None:
            session.get(f"{url}/ping").raise_for_status()

        def answer(index: int) -> None:
            serve.answer(model, bodies[index % len(bodies)], log=True)

        gate = serve.Gate(serve.Limits(), args.model)
        gate.start()

        def in_worker(index: int) -> None:
            async def trip() -> None:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(gate.pool, serve._answer_in_worker, bodies[index % len(bodies)], True, False)

            runner.run(trip())

        runner = asyncio.Runner()
        for _ in range(args.rounds):
            rounds["answer in a worker process"] += timed(in_worker, args.requests)
            rounds["http"] += timed(post, args.requests)
            rounds["ping"] += timed(ping, args.requests)
            rounds["answer, back to back"] += timed(answer, args.requests)
            rounds["answer after 5 ms idle"] += timed(answer, args.requests, IDLE)
        gate.pool.shutdown()
        runner.close()
    figures = {name: summary(latencies) for name, latencies in rounds.items()}
    output = {"model": args.model, "requests": args.requests, "rounds": args.rounds, "figures": figures}
    (RESULTS / "request_path.json").write_text(json.dumps(output, indent=1) + "\n")
    print("| part | median (95th percentile) |\n|---|---|")
    for name, figure in figures.items():
        print(f"| {name} | {figure['median_ms']:.2f} ms ({figure['p95_ms']:.2f}) |")


if __name__ == "__main__":
    main()
