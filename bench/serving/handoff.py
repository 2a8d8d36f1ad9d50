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


def init(threads):
    import torch

    torch.set_num_threads(threads)


def noop(body: bytes, work_ms: float):
    if work_ms:
        end = time.perf_counter() + work_ms / 1000
        while time.perf_counter() < end:
            pass
    return 200, b'{"x": 1}' * 20, None


async def loop_trips(pool, n, work_ms):
    loop = asyncio.get_running_loop()
    body = os.urandom(5000)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await loop.run_in_executor(pool, noop, body, work_ms)
        out.append(1000 * (time.perf_counter() - t))
    return out


def main():
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=init,
        initargs=(max(1, os.cpu_count() // workers),),
    )
    [f.result() for f in [pool.submit(noop, b"", 0) for _ in range(workers)]]
    for work_ms in (0, 2.5):
        lat = asyncio.run(loop_trips(pool, 300, work_ms))[20:]
        print(
            f"workers {workers} work {work_ms} ms: asyncio round trip median {statistics.median(lat):.2f} ms "
            f"p95 {sorted(lat)[int(0.95 * len(lat))]:.2f} ms; overhead {statistics.median(lat) - work_ms:.2f} ms"
        )
    body = os.urandom(5000)
    lat = []
    for _ in range(300):
        t = time.perf_counter()
        pool.submit(noop, body, 0).result()
        lat.append(1000 * (time.perf_counter() - t))
    print(f"workers {workers}: plain submit().result() median {statistics.median(lat[20:]):.2f} ms")
    pool.shutdown()


if __name__ == "__main__":
    main()
