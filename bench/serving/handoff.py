"""The serve path's hand-off alone: an asyncio loop sends a 5 kB body to a spawned
ProcessPoolExecutor worker (as `pipeline.serve` does) and awaits a small answer.

    python -m bench.serving.handoff [WORKERS]

Prints the median round trip with no work and with 2.5 ms of work in the worker (the model's share).
"""

import asyncio
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

TRIPS, WARM_UP = 300, 20


def init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def noop(body: bytes, work_ms: float) -> tuple[int, bytes, None]:
    """What a worker sends back (status, body, no records), after `work_ms` of busy work."""
    end = time.perf_counter() + work_ms / 1000
    while time.perf_counter() < end:
        pass
    return 200, b'{"x": 1}' * 20, None


async def loop_trips(pool: ProcessPoolExecutor, work_ms: float) -> list[float]:
    """Milliseconds per round trip from an event loop, as `pipeline.serve` awaits its workers."""
    loop = asyncio.get_running_loop()
    body = os.urandom(5000)
    latencies = []
    for _ in range(TRIPS):
        started = time.perf_counter()
        await loop.run_in_executor(pool, noop, body, work_ms)
        latencies.append(1000 * (time.perf_counter() - started))
    return latencies[WARM_UP:]


def main() -> None:
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    pool = ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=init,
        initargs=(max(1, (os.cpu_count() or 1) // workers),),
    )  # fmt: skip
    for started in [pool.submit(noop, b"", 0) for _ in range(workers)]:
        started.result()
    for work_ms in (0, 2.5):
        latencies = asyncio.run(loop_trips(pool, work_ms))
        median, p95 = statistics.median(latencies), statistics.quantiles(latencies, n=20)[-1]
        print(f"workers {workers}, {work_ms} ms of work: round trip median {median:.2f} ms, "
              f"p95 {p95:.2f} ms, hand-off {median - work_ms:.2f} ms")  # fmt: skip
    pool.shutdown()


if __name__ == "__main__":
    main()
